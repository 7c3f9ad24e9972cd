"""The backend Protocols every engine implements, and the helpers built only on them.

A chat engine is anything that can stream a :class:`~sovereign.types.GenerationRequest` and count
its prompt tokens; non-streaming calls are the same stream collected by :func:`collect`, so every
engine has exactly one generation path. An embedding engine turns texts into unit vectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np

from sovereign.errors import ContextLengthExceededError
from sovereign.types import FinishReason, GenerationChunk, GenerationRequest, GenerationResult, ToolCall, Usage

Feature = Literal["json_mode", "json_schema", "tools", "vision", "audio", "logprobs", "n", "ignore_eos", "seed",
                  "completions", "tokenize"]
"""A request feature a deployment must support to serve it (see :meth:`Capabilities.missing`)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do; the router reads it to choose deployments that can serve a request.

    ``context_window`` is in tokens (prompt + output). Feature flags: ``json_mode`` (JSON-object
    grammar), ``json_schema`` (output constrained by a JSON schema), ``tools`` (function calling),
    ``vision`` (image inputs), ``audio`` (audio inputs), ``logprobs``, ``n`` (several choices per
    request natively; the gateway fans out otherwise), ``ignore_eos``, ``seed``, ``completions``
    (the raw-prompt ``/v1/completions`` API) and ``tokenize`` (an exact
    token-count endpoint; without it counts are the upper-bound estimate of
    :mod:`sovereign.backends.context_fit`). ``engine`` and ``owned_by`` are display labels only:
    nothing may branch on them.
    """

    context_window: int
    json_mode: bool = True
    json_schema: bool = False
    tools: bool = False
    vision: bool = False
    audio: bool = False
    logprobs: bool = False
    n: bool = False
    seed: bool = True
    ignore_eos: bool = True
    completions: bool = True
    tokenize: bool = False
    engine: str = "unknown"
    owned_by: str = "sovereign"

    def missing(self, features: Iterable[Feature]) -> list[Feature]:
        """The features of ``features`` this engine lacks, in the given order (empty: it can serve)."""
        flags = asdict(self)
        return [f for f in features if not flags[f]]

    @classmethod
    def union(cls, caps: Sequence[Capabilities], *, engine: str) -> Capabilities:
        """What a route over several engines offers: every feature one of them has, the largest window."""
        flags = {f: any(not c.missing([f]) for c in caps) for f in FEATURES}
        return cls(context_window=max(c.context_window for c in caps), engine=engine, owned_by=caps[0].owned_by,
                   **flags)


FEATURES: tuple[Feature, ...] = get_args(Feature)


def required_features(request: GenerationRequest) -> list[Feature]:
    """The features a deployment must have to serve ``request`` (see :class:`Capabilities`)."""
    needed: list[Feature] = []
    s = request.sampling
    if request.tools and request.tool_choice != "none":
        needed.append("tools")
    if s.json_mode:
        needed.append("json_mode")
    if s.json_schema is not None:
        needed.append("json_schema")
    if s.logprobs:
        needed.append("logprobs")
    if s.ignore_eos:
        needed.append("ignore_eos")
    media = set().union(*(m.media for m in request.messages)) if request.messages else set()
    if "image_url" in media:
        needed.append("vision")
    if "input_audio" in media:
        needed.append("audio")
    if not request.is_chat:
        needed.append("completions")
    return needed


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


@runtime_checkable
class TokenCounting(Protocol):
    """Optional: a chat backend that counts the tokens of a bare text (no chat template) exactly.

    Callers check ``isinstance(backend, TokenCounting)`` and fall back to
    :func:`sovereign.backends.context_fit.estimate_tokens` (an upper bound) otherwise.
    """

    async def count_text_tokens(self, text: str) -> int:
        """Tokens of ``text``. Raises EngineError subclasses when the engine cannot be asked."""


@runtime_checkable
class Tokenizing(Protocol):
    """Optional: a chat backend exposing its tokenizer (``POST /tokenize`` and ``/detokenize``)."""

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text``. Raises EngineError subclasses when the engine cannot be asked."""

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``. Raises EngineError subclasses when the engine cannot be asked."""


@runtime_checkable
class HealthProbed(Protocol):
    """Optional: a chat backend with an active health check (remote engines, the managed engine)."""

    async def health(self) -> float:
        """Probe the engine once; returns the round trip in seconds. Raises EngineError subclasses."""


@runtime_checkable
class WholeAnswers(Protocol):
    """Optional: a chat backend that answers some requests in one piece (no upstream stream).

    The router then waits for the whole answer before committing to a deployment, so a failure is
    still retried elsewhere.
    """

    def whole_answer(self, request: GenerationRequest) -> bool:
        """True when ``request`` will be answered in one piece by this backend."""


@runtime_checkable
class SourceScoped(Protocol):
    """Optional: a chat backend whose answers depend on stored documents (RAG, agents).

    The response cache keys such answers by the collection and that collection's index version, so
    an ingest or a deletion makes older cached answers unreachable. A backend that is not
    ``SourceScoped`` answers from the model alone.
    """

    async def source_scope(self, metadata: dict[str, str] | None, tenant: str | None = None) -> tuple[str, int]:
        """``(collection, index_version)`` the answer to ``tenant``'s request with ``metadata`` would read.

        Raises:
            LookupError: the index version cannot be known now (the store is down); do not cache.
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
class StartLimited(Protocol):
    """An engine whose decode slots and GPU offload can be lowered before :meth:`start` (feature
    flags ``batch_inference`` and ``triton_gpu_acceleration``, :mod:`sovereign.flags`)."""

    def limit(self, *, n_parallel: int | None = None, n_gpu_layers: int | None = None) -> None:
        """Use at most these (None = unchanged); takes effect at the next (re)start."""


@runtime_checkable
class EmbeddingBackend(Protocol):
    """An engine turning texts into L2-normalised float32 vectors of ``dimensions`` length."""

    name: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Return ``(vectors [len(texts), dimensions] float32, prompt tokens used)``."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the embedding model's tokenizer (no truncation)."""

    async def close(self) -> None:
        """Release the model's threads and connections; idempotent."""


async def collect(chunks: AsyncIterator[GenerationChunk]) -> GenerationResult:
    """Drain a stream into one :class:`GenerationResult` (the non-streaming path): text, tool-call
    pieces joined per call index, log-probabilities concatenated, the final usage and metadata."""
    parts: list[str] = []
    usage = Usage()
    finish: FinishReason = "stop"
    metadata: dict[str, Any] = {}
    calls: dict[int, tuple[list[str], list[str], list[str]]] = {}  # index -> ids, names, argument pieces
    logprobs: list[dict[str, Any]] | None = None
    async for chunk in chunks:
        parts.append(chunk.text)
        usage = chunk.usage
        for delta in chunk.tool_calls or ():
            ids, names, arguments = calls.setdefault(delta.index, ([], [], []))
            ids.extend([delta.id] if delta.id else [])
            names.extend([delta.name] if delta.name else [])
            arguments.append(delta.arguments)
        if chunk.logprobs:
            logprobs = [*(logprobs or []), *chunk.logprobs]
        if chunk.finish_reason is not None:
            finish = chunk.finish_reason
            metadata = chunk.metadata or {}
    tool_calls = [ToolCall(ids[0] if ids else f"call_{i}", names[0] if names else "", "".join(arguments))
                  for i, (ids, names, arguments) in sorted(calls.items())]
    return GenerationResult(text="".join(parts), finish_reason=finish, usage=usage, metadata=metadata,
                            tool_calls=tool_calls, logprobs=logprobs)


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
