"""OpenAI Responses API (``POST /v1/responses``): the request body and its translation into domain types.

Parsed like the chat wire models (:class:`~sovereign.server.schemas.WireModel`: unknown fields
reported in ``X-Sovereign-Ignored-Fields``, ``null`` = default) and translated into the same
:class:`~sovereign.types.GenerationRequest` the chat path serves:

* ``instructions`` -> a leading system message; ``input`` (a string -> one user message, or a list
  of items) -> messages: ``message`` items (``role`` user/system/developer/assistant, ``content`` a
  string or ``input_text`` / ``output_text`` / ``refusal`` / ``input_image`` parts), ``function_call``
  items -> the assistant's ``tool_calls`` (consecutive calls join one assistant turn),
  ``function_call_output`` items -> ``tool`` messages (each must answer an earlier call's ``call_id``);
* ``tools`` (function tools) -> chat-shaped function tools; ``tool_choice`` ``auto | none | required |
  {type: function, name} | {type: allowed_tools, mode, tools}`` -> the chat choice;
* ``text.format`` ``json_object`` / ``json_schema`` -> ``json_mode`` / ``json_schema``;
  ``max_output_tokens``, ``temperature``, ``top_p`` -> sampling; ``include:
  ["message.output_text.logprobs"]`` with ``top_logprobs`` -> log-probabilities.

``previous_response_id`` prepends a stored conversation (``history``, looked up by the route).

Accepted and without effect: ``store`` (only decides whether the route keeps the conversation for a
later ``previous_response_id``), ``metadata`` (echoed; a pipeline may read it), ``user``,
``service_tier``, ``safety_identifier``, ``prompt_cache_key`` / ``prompt_cache_retention`` (the
engine's prompt cache reuses any repeated prefix by itself), ``max_tool_calls`` (caps built-in
tools, which are refused), ``text.verbosity``, ``stream_options``, and ``reasoning`` /
``truncation`` / ``background`` at their defaults. Refused with 400 ``unsupported_parameter``
naming the field: non-function tools (``web_search``, ``file_search``, MCP, ...), ``conversation``
(send ``input``, or use ``previous_response_id``), ``prompt`` templates, ``background: true``,
``truncation: "auto"``, a reasoning ``effort`` / ``summary``, input items other than messages and
function calls, ``include`` values other than ``message.output_text.logprobs`` and
``reasoning.encrypted_content`` (no reasoning is produced), and file inputs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from sovereign.errors import InvalidRequestError, UnsupportedParameterError
from sovereign.server.schemas import FUNCTION_NAME, MAX_OUTPUT_TOKENS, WireModel
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams, ToolCall

LOGPROBS_INCLUDE = "message.output_text.logprobs"
HARMLESS_INCLUDES = frozenset({LOGPROBS_INCLUDE, "reasoning.encrypted_content"})  # nothing else to include
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})
NAME = re.compile(FUNCTION_NAME)
Tools = tuple[dict[str, Any], ...]


class ContentPart(WireModel):
    """One part of a message's content: text (``input_text``, ``output_text``, ``refusal``) or an image."""

    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None
    annotations: list[Any] | None = None  # an earlier answer sent back as history; not used
    logprobs: list[Any] | None = None


class InputItem(WireModel):
    """An ``input`` item: a message (``type`` ``message`` or absent), a ``function_call`` or a
    ``function_call_output``. Which fields matter depends on ``type``; :func:`messages` checks them."""

    type: str | None = None
    role: Literal["user", "system", "developer", "assistant"] | None = None
    content: list[ContentPart] | None = None  # a string arrives as one input_text part
    id: str | None = None
    status: str | None = None
    phase: str | None = None
    call_id: str | None = Field(None, min_length=1, max_length=256)
    name: str | None = None
    arguments: str | None = None
    output: list[ContentPart] | None = None  # a string arrives as one input_text part

    @field_validator("content", "output", mode="before")
    @classmethod
    def _text_as_part(cls, value: Any) -> Any:
        return [{"type": "input_text", "text": value}] if isinstance(value, str) else value


class FunctionTool(WireModel):
    """A ``tools`` entry; only ``type: "function"`` is served."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceObject(WireModel):
    """``{"type": "function", "name"}`` or ``{"type": "allowed_tools", "mode", "tools"}``."""

    type: str
    name: str | None = None
    mode: Literal["auto", "required"] | None = None
    tools: list[dict[str, Any]] | None = None


class TextFormat(WireModel):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(WireModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(WireModel):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(WireModel):
    """``POST /v1/responses`` body (see the module docstring for what is served, ignored, refused)."""

    model: str = Field(min_length=1)
    input: list[InputItem]  # a string arrives as one user message
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    text: TextConfig | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=256)
    store: bool | None = None
    include: list[str] | None = None
    reasoning: Reasoning | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    max_tool_calls: int | None = Field(None, ge=1)
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    seed: int | None = None  # not OpenAI's; the chat path's reproducibility knob
    cache: Literal["auto", "no-cache", "no-store", "off", "force"] | None = None  # see docs/cache.md

    @field_validator("input", mode="before")
    @classmethod
    def _input_kind(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "message", "role": "user", "content": value}]
        if not isinstance(value, list):
            raise ValueError("input must be a string or a list of input items")
        if not value:
            raise ValueError("input must not be an empty list")
        return value

    def to_domain(self, history: tuple[ChatMessage, ...] = ()) -> GenerationRequest:
        """Validate what pydantic cannot and build the engine-neutral chat request: ``instructions``,
        then ``history`` (the conversation of ``previous_response_id``), then ``input``.

        Raises:
            UnsupportedParameterError: a refused field or value (module docstring), naming it.
            InvalidRequestError: a malformed item (naming ``input.<i>.<field>``), a
                ``function_call_output`` answering no earlier call, a tool_choice naming no tool,
                ``json_schema`` without a schema, ``top_logprobs`` without the logprobs include.
        """
        self._refuse_unsupported()
        tools = tuple(self._tool(i, t) for i, t in enumerate(self.tools or ()))
        tools, choice = self._choice(tools)
        json_mode, json_schema = self._format()
        logprobs = LOGPROBS_INCLUDE in (self.include or ())
        if self.top_logprobs and not logprobs:
            raise InvalidRequestError(f"top_logprobs needs include: [{LOGPROBS_INCLUDE!r}].", param="top_logprobs")
        sampling = SamplingParams(
            max_tokens=self.max_output_tokens, temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p, seed=self.seed, json_mode=json_mode,
            json_schema=json_schema, logprobs=logprobs, top_logprobs=self.top_logprobs or 0,
        )
        return GenerationRequest(
            model=self.model, sampling=sampling, messages=self._messages(history), user=self.user, tools=tools,
            tool_choice=choice, parallel_tool_calls=self.parallel_tool_calls,
        )

    def _refuse_unsupported(self) -> None:
        def refuse(param: str, why: str) -> None:
            raise UnsupportedParameterError(why, param=param)

        if self.conversation:
            refuse("conversation", "conversation is not supported; send the whole conversation in input.")
        if self.prompt:
            refuse("prompt", "Prompt templates (prompt) are not supported; send instructions and input.")
        if self.background:
            refuse("background", "background responses are not supported.")
        if self.truncation == "auto":
            refuse("truncation", "truncation 'auto' is not supported; the request fails when it does not fit.")
        if self.reasoning is not None and (self.reasoning.effort or self.reasoning.summary
                                           or self.reasoning.generate_summary):
            refuse("reasoning", "reasoning settings are not supported by the gateway's models.")
        for i, value in enumerate(self.include or ()):
            if value not in HARMLESS_INCLUDES:
                refuse(f"include.{i}", f"include {value!r} is not supported.")

    @staticmethod
    def _tool(i: int, tool: FunctionTool) -> dict[str, Any]:
        if tool.type != "function":
            raise UnsupportedParameterError(f"Tool type {tool.type!r} is not supported; only function tools are.",
                                            param=f"tools.{i}.type")
        if tool.name is None or not NAME.match(tool.name):
            raise InvalidRequestError("A function tool needs a name of 1-64 letters, digits, '_' or '-'.",
                                      param=f"tools.{i}.name")
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        return {"type": "function", "function": function}

    def _choice(self, tools: Tools) -> tuple[Tools, str | dict[str, Any] | None]:
        """The domain tools (``allowed_tools`` narrows them) and tool_choice."""
        names = {t["function"]["name"] for t in tools}
        choice = self.tool_choice
        if choice is None or isinstance(choice, str):
            if choice == "required" and not tools:
                raise InvalidRequestError("tool_choice 'required' needs at least one tool in tools.",
                                          param="tool_choice")
            return tools, choice
        if choice.type == "function":
            if choice.name not in names:
                raise InvalidRequestError(f"tool_choice names function {choice.name!r}, which is not in tools.",
                                          param="tool_choice.name")
            return tools, {"type": "function", "function": {"name": choice.name}}
        if choice.type == "allowed_tools":
            allowed = {str(t.get("name")) for t in choice.tools or () if t.get("type") == "function"}
            if not allowed or len(allowed) != len(choice.tools or ()) or not allowed <= names:
                raise InvalidRequestError("allowed_tools must list function tools of tools by name.",
                                          param="tool_choice.tools")
            return tuple(t for t in tools if t["function"]["name"] in allowed), choice.mode or "auto"
        raise UnsupportedParameterError(f"tool_choice type {choice.type!r} is not supported; use auto, none, "
                                        "required, a function or allowed_tools.", param="tool_choice.type")

    def _format(self) -> tuple[bool, dict[str, Any] | None]:
        fmt = self.text.format if self.text is not None else None
        if fmt is None or fmt.type == "text":
            return False, None
        if fmt.type == "json_object":
            return True, None
        if fmt.schema_ is None:
            raise InvalidRequestError("text.format json_schema needs schema (a JSON Schema).",
                                      param="text.format.schema")
        return False, fmt.schema_

    def _messages(self, history: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
        out: list[ChatMessage] = [ChatMessage("system", self.instructions)] if self.instructions else []
        out += history
        calls = {call.id for m in history for call in m.tool_calls}
        for i, item in enumerate(self.input):
            kind = item.type or "message"
            if kind == "message":
                out.append(_message(i, item))
            elif kind == "function_call":
                call = _call(i, item)
                calls.add(call.id)
                last = out[-1] if out else None
                if last is not None and last.role == "assistant":  # parallel calls, or text then calls
                    out[-1] = ChatMessage("assistant", last.content, (*last.tool_calls, call), parts=last.parts)
                else:
                    out.append(ChatMessage("assistant", "", (call,)))
            elif kind == "function_call_output":
                if item.call_id not in calls:
                    raise InvalidRequestError(
                        f"input[{i}] is a function_call_output for call_id {item.call_id!r}, which no earlier "
                        "function_call item made.", param=f"input.{i}.call_id")
                out.append(ChatMessage("tool", _output_text(i, item.output), tool_call_id=item.call_id))
            else:
                raise UnsupportedParameterError(
                    f"input[{i}] has type {kind!r}; only message, function_call and function_call_output "
                    "items are supported.", param=f"input.{i}.type")
        return tuple(out)


def _message(i: int, item: InputItem) -> ChatMessage:
    """A message item as a chat message (images kept as ``image_url`` parts)."""
    if item.role is None:
        raise InvalidRequestError(f"input[{i}] is a message without a role.", param=f"input.{i}.role")
    if item.content is None:
        return ChatMessage(item.role, "")
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(item.content):
        where = f"input.{i}.content.{j}"
        if part.type in TEXT_PARTS:
            text = part.refusal if part.type == "refusal" else part.text
            if text is None:
                raise InvalidRequestError(f"A {part.type} part needs its text.", param=f"{where}.text")
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif part.type == "input_image" and part.image_url and re.match(r"^(https?://|data:image/)", part.image_url):
            parts.append({"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail or "auto"}})
        else:
            raise UnsupportedParameterError(
                f"Content part type {part.type!r} is not supported here (images need an http(s) or data: "
                "image_url; file ids and files are not supported).", param=f"{where}.type")
    media = any(p["type"] != "text" for p in parts)
    return ChatMessage(item.role, "".join(texts), parts=tuple(parts) if media else ())


def _call(i: int, item: InputItem) -> ToolCall:
    if not item.call_id:
        raise InvalidRequestError(f"input[{i}] is a function_call without call_id.", param=f"input.{i}.call_id")
    if item.name is None or not NAME.match(item.name):
        raise InvalidRequestError(f"input[{i}] is a function_call without a valid name.", param=f"input.{i}.name")
    if item.arguments is None:
        raise InvalidRequestError(f"input[{i}] is a function_call without arguments.",
                                  param=f"input.{i}.arguments")
    return ToolCall(item.call_id, item.name, item.arguments)


def _output_text(i: int, output: list[ContentPart] | None) -> str:
    """A function_call_output's ``output``: a string, or text parts joined."""
    if output is None:
        raise InvalidRequestError(f"input[{i}] is a function_call_output without output.", param=f"input.{i}.output")
    texts = []
    for j, part in enumerate(output):
        if part.type not in TEXT_PARTS or part.text is None:
            raise UnsupportedParameterError(f"function_call_output parts must be text, not {part.type!r}.",
                                            param=f"input.{i}.output.{j}.type")
        texts.append(part.text)
    return "".join(texts)


def echo(body: ResponsesRequest) -> dict[str, Any]:
    """The request fields a ``Response`` object repeats, with OpenAI's defaults."""
    fmt = body.text.format if body.text is not None and body.text.format is not None else None
    text: dict[str, Any] = {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}}
    if body.text is not None and body.text.verbosity:
        text["verbosity"] = body.text.verbosity
    choice = body.tool_choice.model_dump(exclude_none=True) if isinstance(body.tool_choice, ToolChoiceObject) \
        else body.tool_choice or "auto"
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "max_tool_calls": body.max_tool_calls,
        "metadata": body.metadata or {},
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": body.store is not False,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": text,
        "tool_choice": choice,
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": "disabled",
        "user": body.user,
        "background": False,
        "service_tier": "default",
    }
