"""The backend Protocols every engine implements, and the helpers built only on them.

A chat engine is anything that can stream a :class:`~sovereign.types.GenerationRequest` and count
its prompt tokens; non-streaming calls are the same stream collected by :func:`collect`, so every
engine has exactly one generation path. An embedding engine turns texts into unit vectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sovereign.errors import ContextLengthExceededError
from sovereign.types import FinishReason, GenerationChunk, GenerationRequest, GenerationResult, Usage


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do. ``context_window`` is in tokens (prompt + output)."""

    context_window: int
    json_mode: bool = True
    seed: bool = True
    ignore_eos: bool = True
    completions: bool = True
    engine: str = "unknown"
    owned_by: str = "sovereign"


@runtime_checkable
class ChatBackend(Protocol):
    """An engine serving one public model name for chat and text completions."""

    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def ready(self) -> bool: ...

    async def start(self) -> None:
        """Load the model or connect; idempotent. Raises EngineUnavailableError on failure."""

    async def close(self) -> None:
        """Release the model, threads and connections."""

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens as the engine's own tokenizer counts them (chat template applied)."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Generate; the last chunk has ``finish_reason``. Implementations are async generators:
        ``aclose()`` (client disconnect) stops generation at once.

        Raises:
            ContextLengthExceededError: prompt + ``max_tokens`` exceed the context window.
            UnsupportedParameterError: a parameter this engine cannot honour.
            EngineError: the engine failed (subclasses for unavailable, overloaded, timeout).
        """


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A supervised engine process as operators see it (``backends list``, ``/admin/backends``)."""

    pid: int | None
    url: str | None
    healthy: bool
    restarts: int
    slots: int


@runtime_checkable
class SupervisedEngine(Protocol):
    """A chat backend that runs its engine as a child process of the gateway (the managed llama-server)."""

    def info(self) -> ProcessInfo:
        """Process id (None while down), root URL, health, restarts so far and decode slots."""


@runtime_checkable
class EmbeddingBackend(Protocol):
    """An engine turning texts into L2-normalised float32 vectors of ``dimensions`` length."""

    name: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Return ``(vectors [len(texts), dimensions] float32, prompt tokens used)``."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the embedding model's tokenizer (no truncation)."""


async def collect(chunks: AsyncIterator[GenerationChunk]) -> GenerationResult:
    """Drain a stream into one :class:`GenerationResult` (the non-streaming path)."""
    parts: list[str] = []
    usage = Usage()
    finish: FinishReason = "stop"
    metadata: dict[str, Any] = {}
    async for chunk in chunks:
        parts.append(chunk.text)
        usage = chunk.usage
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
            metadata = chunk.metadata or {}
    return GenerationResult(text="".join(parts), finish_reason=finish, usage=usage, metadata=metadata)


def resolve_max_tokens(
    prompt_tokens: int, requested: int | None, context_window: int, default_max_tokens: int
) -> int:
    """The output budget for a request, checked against the context window (OpenAI semantics).

    ``requested`` None means "as much as fits", capped at ``default_max_tokens``.

    Raises:
        ContextLengthExceededError: ``prompt_tokens + requested > context_window``, or the prompt
            alone leaves no room for one output token.
    """
    room = context_window - prompt_tokens
    if requested is None:
        if room < 1:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {context_window} tokens, but the prompt has "
                f"{prompt_tokens} tokens. Shorten the messages.",
                param="messages",
            )
        return min(room, default_max_tokens)
    if prompt_tokens + requested > context_window:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {context_window} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
        )
    return requested
