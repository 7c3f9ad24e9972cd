"""Domain types shared by the rooms (engine-neutral, wire-neutral).

The server translates OpenAI wire schemas into these; backends translate these into engine calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool", "developer"]
FinishReason = Literal["stop", "length", "tool_calls"]  # OpenAI's set (content_filter is never produced)


DEPLOYMENT_HEADER = "X-Sovereign-Deployment"
"""The HTTP header that pins a request to one deployment (:attr:`GenerationRequest.deployment`)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``tool_calls[]`` item."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One conversation turn. ``content`` is plain text (multi-part text is joined by the server).

    An assistant turn may carry ``tool_calls`` (its content then often empty); a ``tool`` turn
    answers the call whose id is ``tool_call_id``. ``parts`` keeps a multi-part content with
    images or audio as sent (OpenAI part dicts, text parts included, in order); ``content`` is
    then its text alone.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    parts: tuple[dict[str, Any], ...] = ()

    @property
    def media(self) -> set[str]:
        """The non-text part types of this message (``image_url``, ``input_audio``)."""
        return {str(p.get("type")) for p in self.parts if p.get("type") != "text"}


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding parameters, already validated.

    ``max_tokens`` is the output budget in tokens (None = as much as fits, capped by the engine's
    default); ``temperature`` 0 means greedy decoding;
    ``json_mode`` constrains output to JSON with a grammar, ``json_schema`` (a JSON Schema object)
    to JSON valid against that schema; ``ignore_eos`` keeps decoding past the end-of-sequence
    token until ``max_tokens`` (benchmark clients rely on it); ``logprobs`` returns the chosen
    tokens' log-probabilities with ``top_logprobs`` (0..20) alternatives each; ``samplers`` are
    engine sampler settings beyond OpenAI's (``top_k``, ``min_p``, ``repetition_penalty``), sent to
    engines that take them and dropped for the others.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_mode: bool = False
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    samplers: dict[str, float] = field(default_factory=dict)
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A chat request (``messages``) or a raw completion request (``prompt``), never both.

    ``buffered`` is true when the client receives the whole answer at once (non-streaming): an
    engine failure mid-generation is then still invisible, so a router may restart elsewhere.
    ``tools`` are OpenAI function tools (``{"type": "function", "function": {name, description,
    parameters}}``); ``tool_choice`` is ``"none" | "auto" | "required" | {"type": "function",
    "function": {"name": ...}}`` or None (the engine's default). ``tenant`` is the caller's tenant
    (from its API key), set by the request flow: pipeline models scope documents and threads by it.
    ``deployment`` pins the request to one deployment of a routed model (no canary split, no
    fallback): how an evaluation compares a candidate with the stable deployment. Set by the request
    flow from the admin-only ``X-Sovereign-Deployment`` header; a pipeline model passes it on.
    """

    model: str
    sampling: SamplingParams
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    user: str | None = None
    conversation_id: str | None = None
    buffered: bool = False
    tenant: str | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    deployment: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.prompt is None


@dataclass(slots=True)
class Usage:
    """Token counts of one generation (OpenAI ``usage``). ``cached_tokens``: prompt tokens the engine
    reused from its prompt cache instead of computing them (OpenAI ``prompt_tokens_details``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object; ``prompt_tokens_details`` only when the engine reported a cache hit."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call ``index`` carries ``id`` and
    ``name``; ``arguments`` pieces concatenate to the arguments' JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``delta.tool_calls[]`` item."""
        out: dict[str, Any] = {"index": self.index}
        if self.id is not None:
            out["id"] = self.id
            out["type"] = "function"
        function: dict[str, Any] = {"arguments": self.arguments}
        if self.name is not None:
            function["name"] = self.name
        out["function"] = function
        return out


@dataclass(slots=True)
class GenerationChunk:
    """One streamed piece of output: ``text`` (may be empty) and, on the last chunk, ``finish_reason``.

    ``usage`` is the running count so far (``continuous_usage_stats``); on the last chunk it is final.
    ``metadata`` (last chunk only) is what a pipeline adds to the response's ``sovereign`` field:
    sources, timings, validator verdict, cache status.
    """

    text: str
    usage: Usage
    finish_reason: FinishReason | None = None
    metadata: dict[str, Any] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    logprobs: list[dict[str, Any]] | None = None  # OpenAI ``logprobs.content`` items of this chunk's tokens


@dataclass(slots=True)
class GenerationResult:
    """A whole (non-streamed) generation."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    metadata: dict[str, Any] = field(default_factory=dict)
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None

    def as_chunk(self) -> GenerationChunk:
        """The whole result as one final stream chunk (tool calls as one piece each)."""
        calls = [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(self.tool_calls)]
        return GenerationChunk(self.text, self.usage, self.finish_reason, self.metadata or None,
                               tool_calls=calls or None, logprobs=self.logprobs)
