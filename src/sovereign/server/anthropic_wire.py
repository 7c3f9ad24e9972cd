"""Anthropic Messages API: wire schemas, their translation into domain types, and the response shape.

Requests (``POST /v1/messages``, ``/v1/messages/count_tokens``) are parsed like the OpenAI wire
models (:class:`~sovereign.server.schemas.WireModel`: unknown fields reported, ``null`` = default)
and translated into the same :class:`~sovereign.types.GenerationRequest` the chat path serves:
``system`` becomes a system message; ``tools`` (custom tools) become OpenAI function tools;
``tool_choice`` ``auto | any | tool | none`` becomes ``auto | required | {named} | none``; assistant
``tool_use`` blocks become ``tool_calls`` and user ``tool_result`` blocks become ``tool`` messages;
``image`` blocks become ``image_url`` parts; ``thinking`` blocks in the history are dropped;
``top_k`` is an engine sampler (dropped for engines without one); ``metadata.user_id`` is the user.
:class:`MessagesShape` renders answers as a ``message`` body or as Anthropic SSE events.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from sovereign.errors import EngineOverloadedError, InvalidRequestError, SovereignError, UnsupportedParameterError
from sovereign.server.schemas import FUNCTION_NAME, MAX_OUTPUT_TOKENS, MAX_STOP, WireModel
from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest, GenerationResult, SamplingParams, ToolCall

log = logging.getLogger("sovereign.server")

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}


class Cacheable(WireModel):
    """A block that may carry ``cache_control``: accepted, as the engine's prompt cache reuses any
    repeated prefix by itself."""

    cache_control: dict[str, Any] | None = None


class TextBlock(Cacheable):
    type: Literal["text"]
    text: str
    citations: list[Any] | None = None  # in an answer sent back as history; not used


class Base64Source(WireModel):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlSource(WireModel):
    type: Literal["url"]
    url: str = Field(pattern=r"^https?://")


class ImageBlock(Cacheable):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]

    def part(self) -> dict[str, Any]:
        """The OpenAI ``image_url`` part (a base64 image as a ``data:`` URL)."""
        s = self.source
        url = s.url if isinstance(s, UrlSource) else f"data:{s.media_type};base64,{s.data}"
        return {"type": "image_url", "image_url": {"url": url}}


class ToolUseBlock(Cacheable):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(pattern=FUNCTION_NAME)
    input: dict[str, Any]


class ToolResultBlock(Cacheable):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool = False


class ThinkingBlock(WireModel):
    """A ``thinking`` / ``redacted_thinking`` block of an earlier answer: dropped (not model input here)."""

    type: Literal["thinking", "redacted_thinking"]
    thinking: str = ""
    signature: str = ""
    data: str = ""


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
                  Field(discriminator="type")]


class MessageParam(WireModel):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(Cacheable):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None
    strict: bool | None = None


class ToolChoiceParam(WireModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(WireModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class OutputFormat(WireModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(WireModel):
    format: OutputFormat | None = None


class Metadata(WireModel):
    user_id: str | None = Field(None, max_length=256)


class CountTokensRequest(WireModel):
    """``POST /v1/messages/count_tokens`` body (the prompt part of a Messages request)."""

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None

    def to_domain(self) -> GenerationRequest:
        """The engine-neutral request.

        Raises:
            InvalidRequestError: a ``tool_choice`` naming no tool (or ``any``/``tool`` without tools);
                a ``tool_result`` answering no earlier ``tool_use``; a block in the wrong role.
            UnsupportedParameterError: server tools, extended thinking, images in a tool result.
        """
        if self.thinking is not None and self.thinking.type != "disabled":
            raise UnsupportedParameterError("Extended thinking is not supported; omit thinking or send "
                                            "{\"type\": \"disabled\"}.", param="thinking")
        tools = self._tools()
        choice, parallel = self._tool_choice(tools)
        return GenerationRequest(model=self.model, sampling=self.sampling(), messages=self._messages(),
                                 user=self.user(), tools=tools, tool_choice=choice, parallel_tool_calls=parallel)

    def sampling(self) -> SamplingParams:
        """Decoding parameters (counting tokens needs none but the output schema)."""
        return SamplingParams(json_schema=self._json_schema())

    def user(self) -> str | None:
        return None

    def _json_schema(self) -> dict[str, Any] | None:
        output = self.output_config
        return output.format.schema_ if output is not None and output.format is not None else None

    def _tools(self) -> tuple[dict[str, Any], ...]:
        out = []
        for i, tool in enumerate(self.tools or ()):
            if tool.type not in (None, "custom") or tool.input_schema is None:
                raise UnsupportedParameterError(
                    f"tools[{i}] ({tool.type or 'no input_schema'}): only custom tools with an input_schema are "
                    "supported; server tools (web search, bash, text editor...) are not.", param=f"tools.{i}")
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
            if tool.description is not None:
                function["description"] = tool.description
            out.append({"type": "function", "function": function})
        return tuple(out)

    def _tool_choice(self, tools: tuple[dict[str, Any], ...]) -> tuple[str | dict[str, Any] | None, bool | None]:
        """Domain ``tool_choice`` and ``parallel_tool_calls``."""
        choice = self.tool_choice
        if choice is None:
            return None, None
        parallel = None if choice.disable_parallel_tool_use is None else not choice.disable_parallel_tool_use
        if choice.type in ("auto", "none"):
            return choice.type, parallel
        if not tools:
            raise InvalidRequestError(f"tool_choice {choice.type!r} needs at least one tool in tools.",
                                      param="tool_choice")
        if choice.type == "any":
            return "required", parallel
        if choice.name not in {t["function"]["name"] for t in tools}:
            raise InvalidRequestError(f"tool_choice names tool {choice.name!r}, which is not in tools.",
                                      param="tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}, parallel

    def _messages(self) -> tuple[ChatMessage, ...]:
        out: list[ChatMessage] = []
        system = self.system if isinstance(self.system, str) else "\n".join(b.text for b in self.system or ())
        if system:
            out.append(ChatMessage("system", system))
        called: set[str] = set()
        for i, message in enumerate(self.messages):
            content = message.content
            blocks: list[Any] = [TextBlock(type="text", text=content)] if isinstance(content, str) else content
            if message.role == "assistant":
                out.append(_assistant(blocks, i, called))
            else:
                out.extend(_user(blocks, i, called))
        return tuple(out)


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages`` body. ``cache`` is Sovereign's response-cache control (docs/cache.md)."""

    max_tokens: int = Field(ge=1, le=MAX_OUTPUT_TOKENS)
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOP)
    stream: bool = False
    temperature: float = Field(1.0, ge=0.0, le=1.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=1000)
    metadata: Metadata | None = None
    cache: Literal["auto", "no-cache", "no-store", "off", "force"] | None = None

    def sampling(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              stop=tuple(self.stop_sequences or ()), json_schema=self._json_schema(),
                              samplers={"top_k": float(self.top_k)} if self.top_k is not None else {})

    def user(self) -> str | None:
        return self.metadata.user_id if self.metadata is not None else None


def _assistant(blocks: list[Any], i: int, called: set[str]) -> ChatMessage:
    """An assistant turn: text joined, ``tool_use`` blocks as calls (their ids added to ``called``)."""
    text: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append(ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False)))
            called.add(block.id)
        elif not isinstance(block, ThinkingBlock):
            raise InvalidRequestError(f"messages[{i}] is an assistant message: {block.type} blocks belong in user "
                                      "messages.", param=f"messages.{i}.content.{j}")
    return ChatMessage("assistant", "".join(text), tool_calls=tuple(calls))


def _user(blocks: list[Any], i: int, called: set[str]) -> list[ChatMessage]:
    """A user turn: one ``tool`` message per ``tool_result`` (first), then the text and images."""
    results: list[ChatMessage] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"messages.{i}.content.{j}"
        if isinstance(block, ToolResultBlock):
            if block.tool_use_id not in called:
                raise InvalidRequestError(
                    f"messages[{i}].content[{j}] is a tool_result for tool_use_id {block.tool_use_id!r}, which no "
                    "earlier assistant tool_use block has.", param=f"{where}.tool_use_id")
            results.append(ChatMessage("tool", _result_text(block, where), tool_call_id=block.tool_use_id))
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(block.part())
        else:
            raise InvalidRequestError(f"messages[{i}] is a user message: {block.type} blocks belong in assistant "
                                      "messages.", param=where)
    if parts or not results:
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        media = any(p["type"] != "text" for p in parts)
        results.append(ChatMessage("user", text, parts=tuple(parts) if media else ()))
    return results


def _result_text(block: ToolResultBlock, where: str) -> str:
    """A tool result's text (``is_error`` prefixes ``Error:``). Raises UnsupportedParameterError: images."""
    if isinstance(block.content, str):
        text = block.content
    else:
        if any(isinstance(b, ImageBlock) for b in block.content):
            raise UnsupportedParameterError("Images in a tool_result are not supported; send text.",
                                            param=f"{where}.content")
        text = "\n".join(b.text for b in block.content if isinstance(b, TextBlock))
    return f"Error: {text}" if block.is_error else text


def error_body(exc: SovereignError) -> dict[str, Any]:
    """Anthropic's error envelope ``{"type": "error", "error": {"type", "message"}}`` for ``exc``."""
    if isinstance(exc, EngineOverloadedError):
        kind = "overloaded_error"
    else:
        kind = ERROR_TYPES.get(exc.status_code, "api_error" if exc.status_code >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def sse(event: str, payload: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: ``event:`` line, ``data:`` JSON line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def tool_input(arguments: str, name: str) -> dict[str, Any]:
    """A call's JSON arguments as the ``tool_use.input`` object; ``{}`` (logged) when not an object."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("tool call arguments are not a JSON object", extra={"tool": name})
        return {}
    return value


def usage_of(prompt: int, completion: int, cached: int) -> dict[str, int]:
    """Anthropic ``usage``: ``input_tokens`` excludes the prompt tokens read from the engine's cache."""
    return {"input_tokens": max(prompt - cached, 0), "output_tokens": completion,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


@dataclass(slots=True)
class MessagesShape:
    """Renders one answer as an Anthropic ``message`` (a :class:`~sovereign.server.streaming.ResponseShape`).

    Streaming: ``message_start``; per content block ``content_block_start``, ``content_block_delta``
    (``text_delta`` / ``input_json_delta``), ``content_block_stop``; then ``message_delta`` (stop
    reason, usage, Sovereign's ``sovereign`` extra) and ``message_stop``. Stop reasons:
    ``stop`` -> ``end_turn``, ``length`` -> ``max_tokens``, ``tool_calls`` -> ``tool_use`` (a stop
    sequence also ends with ``end_turn``: engines do not say which stop ended the answer).
    """

    model: str
    id: str = field(default_factory=lambda: "msg_" + uuid.uuid4().hex)
    extra: dict[str, Any] = field(default_factory=dict)
    _open: str | None = field(default=None, init=False)  # the open block's type
    _blocks: int = field(default=0, init=False)  # blocks started so far
    _calls: dict[int, int] = field(default_factory=dict, init=False)  # tool-call index -> block index
    _done: bool = field(default=False, init=False)

    def body(self, result: GenerationResult) -> dict[str, Any]:
        """The ``message`` body: a text block (also when empty and there are no calls), then ``tool_use`` blocks."""
        content: list[dict[str, Any]] = []
        if result.text or not result.tool_calls:
            content.append({"type": "text", "text": result.text})
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c.arguments, c.name)}
                    for c in result.tool_calls]
        u = result.usage
        body = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": self._stop_reason(result.finish_reason, bool(result.tool_calls)),
                "stop_sequence": None, "usage": usage_of(u.prompt_tokens, u.completion_tokens, u.cached_tokens)}
        body.update(self.extra)
        return body

    @staticmethod
    def _stop_reason(finish_reason: str, called: bool) -> str:
        return "tool_use" if called else STOP_REASONS.get(finish_reason, "end_turn")

    def events(self, chunk: GenerationChunk, *, first: bool) -> list[bytes]:
        """The events of one engine chunk (the first opens the message, the final one ends it)."""
        out: list[bytes] = []
        u = chunk.usage
        if first:
            message: dict[str, Any] = {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": usage_of(u.prompt_tokens, 0, u.cached_tokens)}
            out.append(sse("message_start", {"type": "message_start", "message": message}))
        if chunk.text:
            if self._open != "text":
                out += self._start({"type": "text", "text": ""})
            out.append(self._delta(self._blocks - 1, {"type": "text_delta", "text": chunk.text}))
        for piece in chunk.tool_calls or ():
            if piece.id is not None or piece.index not in self._calls:
                call_id = piece.id or f"call_{uuid.uuid4().hex[:24]}"
                out += self._start({"type": "tool_use", "id": call_id, "name": piece.name or "", "input": {}})
                self._calls[piece.index] = self._blocks - 1
            if piece.arguments:
                out.append(self._delta(self._calls[piece.index],
                                       {"type": "input_json_delta", "partial_json": piece.arguments}))
        if chunk.finish_reason is not None:
            if not self._blocks:
                out += self._start({"type": "text", "text": ""})
            out += self._stop()
            delta = {"stop_reason": self._stop_reason(chunk.finish_reason, bool(self._calls)), "stop_sequence": None}
            payload = {"type": "message_delta", "delta": delta,
                       "usage": usage_of(u.prompt_tokens, u.completion_tokens, u.cached_tokens)}
            payload.update(self.extra)
            out.append(sse("message_delta", payload))
            self._done = True
        return out

    def _start(self, block: dict[str, Any]) -> list[bytes]:
        out = self._stop()
        out.append(sse("content_block_start", {"type": "content_block_start", "index": self._blocks,
                                               "content_block": block}))
        self._blocks += 1
        self._open = block["type"]
        return out

    def _stop(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1})]

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def closing(self) -> list[bytes]:
        """``message_stop`` once the message ended (nothing after an error event)."""
        return [sse("message_stop", {"type": "message_stop"})] if self._done else []

    def error_event(self, error: SovereignError) -> bytes:
        """Anthropic's ``error`` event (the SDK raises it as the status's error class)."""
        return sse("error", error_body(error))
