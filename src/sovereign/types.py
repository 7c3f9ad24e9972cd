"""Domain types shared by the rooms (engine-neutral, wire-neutral).

The server translates OpenAI wire schemas into these; backends translate these into engine calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool", "developer"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One conversation turn. ``content`` is plain text (multi-part text is joined by the server)."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding parameters, already validated.

    ``max_tokens`` is the output budget in tokens (None = as much as fits, capped by the engine's
    default); ``temperature`` 0 means greedy decoding;
    ``json_mode`` constrains output to JSON with a grammar; ``ignore_eos`` keeps decoding past the
    end-of-sequence token until ``max_tokens`` (benchmark clients rely on it).
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


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A chat request (``messages``) or a raw completion request (``prompt``), never both.

    ``buffered`` is true when the client receives the whole answer at once (non-streaming): an
    engine failure mid-generation is then still invisible, so a router may restart elsewhere.
    """

    model: str
    sampling: SamplingParams
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    user: str | None = None
    conversation_id: str | None = None
    buffered: bool = False

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


@dataclass(slots=True)
class GenerationResult:
    """A whole (non-streamed) generation."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    metadata: dict[str, Any] = field(default_factory=dict)
