"""A :class:`~sovereign.backends.base.ChatBackend` serving one public model name over an ordered list
of deployments, with retries, fallback, circuit breakers, timeouts and per-deployment context fitting.

One request, in order:

1. **Pick**: deployments with ``weight > 0`` share first picks in proportion to their weights, sticky
   per user (a hash of ``model:user``; requests without ``user`` pick at random). The rest of the
   list, in configuration order, are the fallbacks. A :class:`Canary` (set by the rollout
   controller, :mod:`sovereign.flags`) first sends its percent of users, sticky, to the candidate.
2. **Skip** a deployment whose circuit breaker is open (:mod:`sovereign.backends.breaker`).
3. **Fit** the conversation to that deployment's window (:mod:`sovereign.backends.context_fit`).
4. **Retry** (tenacity: exponential back-off with jitter) on connection errors, 429 and 5xx until the
   first token arrives; a first-token timeout is not retried (it falls back at once).
5. **Fall back** to the next deployment on an engine failure, a context that cannot fit, or a
   parameter the engine cannot honour; for streaming too: nothing was sent to the client yet.
6. **After the first token** a failure ends the stream: the error is raised as
   :class:`EngineError` code ``engine_stream_interrupted`` and the server sends it as the SSE event
   ``data: {"error": {...}}`` followed by ``data: [DONE]``. :meth:`Router.complete` (non-streaming)
   instead restarts the whole generation on the next deployment, since the client saw nothing.

Timeouts: ``first_token_timeout_s`` for the first chunk, ``total_timeout_s`` for the whole
generation (connect timeouts live in the HTTP client). The final chunk's ``metadata["route"]`` says
which deployment answered, after how many retries and fallbacks, and how many messages were trimmed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from sovereign.backends.base import (
    Capabilities,
    ChatBackend,
    HealthProbed,
    SupervisedEngine,
    TokenCounting,
    WholeAnswers,
    collect,
    required_features,
)
from sovereign.backends.breaker import BreakerState, CircuitBreaker
from sovereign.backends.context_fit import FitResult, TrimPolicy, estimate_tokens, fit_request
from sovereign.config import BackendsSettings
from sovereign.errors import (
    ContextLengthExceededError,
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    SovereignError,
    StreamInterruptedError,
    UnsupportedParameterError,
)
from sovereign.observability import metrics
from sovereign.types import GenerationChunk, GenerationRequest, GenerationResult

log = logging.getLogger("sovereign.router")
_NOT_RETRIED = frozenset({"engine_auth_failed", "engine_not_found"})


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Retry, timeout and fitting knobs (seconds, tokens); built from ``[backends]``."""

    retry_attempts: int = 3
    retry_initial_s: float = 0.1
    retry_max_s: float = 2.0
    retry_jitter_s: float = 0.1
    first_token_timeout_s: float = 30.0
    total_timeout_s: float = 600.0
    trim_policy: TrimPolicy = "latest"
    keep_head_messages: int = 2
    reserve_output_tokens: int = 256

    @classmethod
    def from_settings(cls, s: BackendsSettings) -> RoutingPolicy:
        return cls(
            s.retry_attempts,
            s.retry_initial_s,
            s.retry_max_s,
            s.retry_jitter_s,
            s.first_token_timeout_s,
            s.total_timeout_s,
            s.trim_policy,
            s.keep_head_messages,
            s.reserve_output_tokens,
        )


@dataclass(eq=False)
class Deployment:
    """One engine behind a route: its backend, breaker, window (tokens), weight and last probe."""

    name: str
    backend: ChatBackend
    breaker: CircuitBreaker
    context_window: int
    weight: float = 1.0
    engine: str = "unknown"
    base_url: str | None = None
    last_latency_s: float | None = None
    last_probe_ok: bool | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def count(self, text: str) -> int:
        """Tokens of ``text`` under this deployment's tokenizer (engine endpoint, embedded, or estimate)."""
        if isinstance(self.backend, TokenCounting):
            return int(await self.backend.count_text_tokens(text))
        return estimate_tokens(text)

    async def probe(self) -> bool:
        """Active health check: updates latency, ``sovereign_engine_up`` and the breaker; never raises."""
        started = time.perf_counter()
        try:
            if isinstance(self.backend, HealthProbed):
                self.last_latency_s = float(await self.backend.health())
            elif not self.backend.ready:  # still loading: down, but not a failure to charge the breaker
                self.last_probe_ok, self.last_error = False, "loading"
                metrics.ENGINE_UP.labels(engine=self.name).set(0)
                return False
            else:
                self.last_latency_s = time.perf_counter() - started
        except SovereignError as exc:
            self.last_probe_ok, self.last_error = False, exc.message
            metrics.ENGINE_UP.labels(engine=self.name).set(0)
            self.breaker.probe_failed()
            return False
        self.last_probe_ok, self.last_error = True, None
        metrics.ENGINE_UP.labels(engine=self.name).set(1)
        self.breaker.probe_passed()
        return True

    def status(self) -> dict[str, Any]:
        """A JSON-able row for ``backends list`` and ``GET /admin/backends``; a supervised engine adds
        ``process`` (pid, url, healthy, restarts, slots)."""
        process = asdict(self.backend.info()) if isinstance(self.backend, SupervisedEngine) else None
        return {
            "name": self.name,
            "engine": self.engine,
            "base_url": self.base_url,
            "context_window": self.context_window,
            "weight": self.weight,
            "breaker": self.breaker.state.name.lower(),
            "consecutive_failures": self.breaker.consecutive_failures,
            "up": self.last_probe_ok,
            "latency_ms": None if self.last_latency_s is None else round(self.last_latency_s * 1000, 2),
            "last_error": self.last_error,
            "process": process,
        }


@dataclass(frozen=True, slots=True)
class Canary:
    """A rollout's split of one route: users for whom ``picks(user)`` is true (a sticky ``percent``
    of them, :func:`sovereign.flags.bucketing.within`) get ``candidate`` first; the others never do."""

    candidate: str
    percent: float
    picks: Callable[[str | None], bool]


def sticky_fraction(key: str) -> float:
    """A stable number in [0, 1) for ``key`` (BLAKE2b, 64 bits): the same user always lands the same."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, EngineTimeoutError) or not isinstance(exc, EngineError):
        return False
    return exc.code not in _NOT_RETRIED


class Router:
    """Routes public model ``name`` over ``deployments`` (ordered: the fallback order).

    Args:
        name: the public model name.
        deployments: at least one; shared :class:`Deployment` objects (one breaker per engine).
        policy: retry / timeout / fitting knobs.
        rng: randomness for non-sticky picks and jitter-free tests.
    """

    def __init__(
        self,
        name: str,
        deployments: Sequence[Deployment],
        policy: RoutingPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not deployments:
            raise ValueError("a route needs at least one deployment")
        self.name = name
        self.deployments = list(deployments)
        self.policy = policy or RoutingPolicy()
        self._rng = rng or random.Random()
        self._started = False
        self.canary: Canary | None = None

    @property
    def capabilities(self) -> Capabilities:
        caps = [replace(d.backend.capabilities, context_window=d.context_window) for d in self.deployments]
        return Capabilities.union(caps, engine="router: " + ", ".join(d.name for d in self.deployments))

    @property
    def ready(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Start every deployment; one that fails is logged and its breaker charged, never raised."""
        for d in self.deployments:
            try:
                await d.backend.start()
            except SovereignError as exc:
                log.warning("deployment %s did not start: %s", d.name, exc.message)
                d.breaker.record_failure()
        self._started = True

    async def close(self) -> None:
        """Deployments are shared and closed by whoever built them (the routing plugin)."""

    def order(self, user: str | None, pinned: str | None = None) -> list[Deployment]:
        """Deployments to try, first pick (weighted, sticky per ``user``) first, then the rest in order.

        ``pinned`` (a request's ``deployment``) is the only one tried. Raises InvalidRequestError
        when this route has no deployment of that name."""
        if pinned is not None:
            chosen = [d for d in self.deployments if d.name == pinned]
            if not chosen:
                raise InvalidRequestError(
                    f"Model {self.name} has no deployment {pinned!r} (it has: "
                    f"{', '.join(d.name for d in self.deployments)}).", param="X-Sovereign-Deployment")
            return chosen
        canary = self.canary
        weighted = [d for d in self.deployments if d.weight > 0]
        if canary is not None:
            candidate = next((d for d in self.deployments if d.name == canary.candidate), None)
            if candidate is not None and canary.picks(user):
                return [candidate, *(d for d in self.deployments if d is not candidate)]
            weighted = [d for d in weighted if d is not candidate] or [
                d for d in self.deployments if d is not candidate]
        if len(weighted) <= 1:
            first = weighted[0] if weighted else self.deployments[0]
        else:
            total = sum(d.weight for d in weighted)
            x = (sticky_fraction(f"{self.name}:{user}") if user else self._rng.random()) * total
            first = weighted[-1]
            for d in weighted:
                x -= d.weight
                if x < 0:
                    first = d
                    break
        return [first, *(d for d in self.deployments if d is not first)]

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self.order(request.user, request.deployment)[0].backend.count_prompt_tokens(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Generate with fallback (module docstring). Raises as ChatBackend.stream; see also
        :class:`StreamInterruptedError` after the first token. A ``buffered`` request (the client
        sees nothing until the end) is generated with :meth:`complete` and yielded as one chunk,
        so a failure mid-generation restarts on the next deployment instead of failing."""
        if request.buffered:
            return self._buffered(request)
        return self._stream(request, frozenset())

    async def _buffered(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        result = await self.complete(request)
        yield result.as_chunk()

    async def complete(self, request: GenerationRequest) -> GenerationResult:
        """Non-streaming generation: also a failure mid-generation moves to the next deployment.

        Raises:
            the last error when every deployment failed (as :meth:`stream`).
        """
        skip: set[str] = set()
        while True:
            try:
                return await collect(self._stream(request, frozenset(skip)))
            except StreamInterruptedError as exc:
                skip.add(exc.deployment)
                if len(skip) >= len(self.deployments):
                    raise

    async def _stream(self, request: GenerationRequest, skip: frozenset[str]) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.total_timeout_s
        errors: list[tuple[str, SovereignError]] = []
        previous: str | None = None
        needed = required_features(request)
        for dep in self.order(request.user, request.deployment):
            if dep.name in skip:
                previous = dep.name
                continue
            missing = dep.backend.capabilities.missing(needed)
            if missing:  # a deployment that cannot serve the request is passed over (no breaker charge)
                errors.append((dep.name, UnsupportedParameterError(
                    f"{dep.name} ({dep.engine}) does not support {', '.join(missing)}.", param=missing[0])))
                previous = dep.name
                continue
            if not dep.breaker.allow():
                errors.append((dep.name, EngineUnavailableError(f"circuit breaker {dep.breaker.state.name.lower()}")))
                continue
            if previous is not None:
                metrics.ENGINE_FALLBACKS.labels(model=self.name, from_engine=previous, to_engine=dep.name).inc()
            # From allow() until _open returns, every exit resolves a claimed half-open trial: engine
            # errors are charged to the breaker (by _fit or _open), anything else releases it.
            called = time.perf_counter()
            try:
                fit = await self._fit(dep, request)
                first, chunks, retries = await self._open(dep, fit.request, deadline)
            except (ContextLengthExceededError, UnsupportedParameterError) as exc:
                dep.breaker.release()
                errors.append((dep.name, exc))
                previous = dep.name
                continue
            except InvalidRequestError:
                dep.breaker.release()
                raise
            except EngineError as exc:  # the breaker was charged where it was raised
                metrics.ENGINE_ERRORS.labels(engine=dep.name, kind=type(exc).__name__).inc()
                metrics.DEPLOYMENT_REQUESTS.labels(model=self.name, deployment=dep.name, outcome="error").inc()
                errors.append((dep.name, exc))
                previous = dep.name
                continue
            except BaseException:  # cancelled (client gone), or a bug: not the engine's fault
                dep.breaker.release()
                raise
            metrics.DEPLOYMENT_TTFT.labels(model=self.name, deployment=dep.name).observe(time.perf_counter() - called)
            route = {
                "deployment": dep.name,
                "retries": retries,
                "fallbacks": len(errors) + len(skip),
                "trimmed_messages": fit.dropped,
            }
            try:
                chunk = first
                while chunk.finish_reason is None:
                    yield chunk
                    chunk = await self._next(dep, chunks, deadline)
            except EngineError as exc:
                dep.breaker.record_failure()
                metrics.ENGINE_ERRORS.labels(engine=dep.name, kind=type(exc).__name__).inc()
                metrics.DEPLOYMENT_REQUESTS.labels(model=self.name, deployment=dep.name, outcome="error").inc()
                raise StreamInterruptedError(
                    f"Deployment {dep.name} of {self.name} failed after the answer started: {exc.message}",
                    dep.name,
                ) from exc
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            if not chunk.usage.prompt_tokens:
                chunk.usage.prompt_tokens = fit.prompt_tokens
            chunk.metadata = {**(chunk.metadata or {}), "route": route}
            metrics.DEPLOYMENT_REQUESTS.labels(model=self.name, deployment=dep.name, outcome="ok").inc()
            metrics.DEPLOYMENT_DURATION.labels(model=self.name, deployment=dep.name).observe(
                time.perf_counter() - called)
            yield chunk
            return
        raise self._exhausted(errors)

    async def _fit(self, dep: Deployment, request: GenerationRequest) -> FitResult:
        """``request`` fitted to ``dep``'s window (:func:`fit_request` with this route's policy).

        Raises:
            ContextLengthExceededError: it cannot fit ``dep``'s window (the breaker is not charged).
            EngineError: counting tokens failed (e.g. the tokenize endpoint is down); this charges
                ``dep``'s breaker like a failed generation, so a claimed half-open trial is resolved.
        """
        try:
            return await fit_request(
                request,
                context_window=dep.context_window,
                count=dep.count,
                reserve_output_tokens=self.policy.reserve_output_tokens,
                policy=self.policy.trim_policy,
                keep_head=self.policy.keep_head_messages,
            )
        except EngineError:
            dep.breaker.record_failure()
            raise

    async def _open(
        self, dep: Deployment, request: GenerationRequest, deadline: float
    ) -> tuple[GenerationChunk, AsyncIterator[GenerationChunk], int]:
        """Start ``dep``'s stream and wait for its first chunk, retrying retryable engine errors."""
        p = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(p.retry_attempts),
            wait=wait_exponential_jitter(multiplier=p.retry_initial_s, max=p.retry_max_s, jitter=p.retry_jitter_s),
            retry=retry_if_exception(lambda e: _retryable(e) and dep.breaker.state is not BreakerState.OPEN),
            reraise=True,
        )
        retries = 0
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    retries += 1
                    metrics.ENGINE_RETRIES.labels(engine=dep.name).inc()
                chunks = dep.backend.stream(request)
                whole = isinstance(dep.backend, WholeAnswers) and dep.backend.whole_answer(request)
                try:
                    first = await self._first(dep, chunks, deadline, whole=whole)
                except EngineError:
                    await chunks.aclose()  # type: ignore[attr-defined]
                    dep.breaker.record_failure()
                    raise
                except BaseException:
                    await chunks.aclose()  # type: ignore[attr-defined]
                    dep.breaker.release()
                    raise
                dep.breaker.record_success()
                return first, chunks, retries
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _first(
        self, dep: Deployment, chunks: AsyncIterator[GenerationChunk], deadline: float, *, whole: bool = False
    ) -> GenerationChunk:
        """The first chunk, within the first-token timeout (the total deadline when ``whole``: a JSON
        answer arrives complete)."""
        remaining = deadline - asyncio.get_running_loop().time()
        limit = remaining if whole else min(self.policy.first_token_timeout_s, remaining)
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                return await anext(chunks)
        except TimeoutError as exc:
            raise EngineTimeoutError(f"Deployment {dep.name} sent no first token within {limit:.1f}s.") from exc
        except StopAsyncIteration as exc:
            raise EngineError(f"Deployment {dep.name} ended the stream without output.") from exc

    async def _next(self, dep: Deployment, chunks: AsyncIterator[GenerationChunk], deadline: float) -> GenerationChunk:
        try:
            async with asyncio.timeout(max(deadline - asyncio.get_running_loop().time(), 0.0)):
                return await anext(chunks)
        except TimeoutError as exc:
            raise EngineTimeoutError(
                f"Deployment {dep.name} exceeded the total timeout ({self.policy.total_timeout_s:.0f}s)."
            ) from exc
        except StopAsyncIteration as exc:
            raise EngineError(f"Deployment {dep.name} ended the stream without a finish reason.") from exc

    def _exhausted(self, errors: list[tuple[str, SovereignError]]) -> SovereignError:
        """The error when no deployment answered: a client error if every one was, else 503/504."""
        if errors and all(isinstance(e, InvalidRequestError) for _, e in errors):
            return errors[0][1]
        detail = "; ".join(f"{name}: {e.message}" for name, e in errors) or "no deployment left"
        message = f"Every deployment of {self.name} failed ({detail}). Retry later."
        engine_errors = [e for _, e in errors if isinstance(e, EngineError)]
        if engine_errors and all(isinstance(e, EngineTimeoutError) for e in engine_errors):
            return EngineTimeoutError(message)
        return EngineUnavailableError(message)


class PinnedModel:
    """A :class:`~sovereign.backends.base.ChatBackend` that sends every request of ``inner`` to one
    ``deployment`` (sets :attr:`GenerationRequest.deployment`): how a pipeline whose model calls are
    its own (``sovereign-agent``) keeps the pin of the request it serves."""

    def __init__(self, inner: ChatBackend, deployment: str) -> None:
        self.inner = inner
        self.deployment = deployment
        self.name = inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def ready(self) -> bool:
        return self.inner.ready

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        """The inner model is shared: whoever built it closes it."""

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self.inner.count_prompt_tokens(replace(request, deployment=self.deployment))

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        return self.inner.stream(replace(request, deployment=self.deployment))
