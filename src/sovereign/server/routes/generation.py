"""``POST /v1/chat/completions`` and ``POST /v1/completions``: JSON and SSE streaming.

Both endpoints share one path: wire request -> domain request -> backend stream. For streaming
the first engine chunk is awaited *before* the 200 is sent, so every error that can happen before
the first token (context length, overload, engine down, fallback exhausted) is a proper HTTP
error with the OpenAI envelope. Extra response data from pipelines (sources, timings, validator
verdict, cache status) is in the documented top-level ``sovereign`` field, and in the final
chunk's ``sovereign`` field when streaming.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from sovereign.backends.base import ChatBackend, collect
from sovereign.errors import SovereignError
from sovereign.observability import metrics
from sovereign.server import response_cache
from sovereign.server.responses import OrjsonResponse
from sovereign.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from sovereign.server.state import get_state, require_api_key
from sovereign.server.streaming import DONE_EVENT, CompletionShape, sse_event
from sovereign.types import GenerationChunk, GenerationRequest, Usage

router = APIRouter()


class _TokenClock:
    """Records TTFT (from request receipt), inter-token latency and token counters for one response."""

    def __init__(self, request: Request, model: str) -> None:
        self.model = model
        self.scope_state: dict = request.scope.setdefault("state", {})  # read by the access log / span
        self.t0: float = self.scope_state.get("t0", time.perf_counter())
        self.first: float | None = None
        self.last: float | None = None

    def tick(self, chunk: GenerationChunk) -> None:
        if not chunk.text:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            self.scope_state["ttft_s"] = now - self.t0
            metrics.TIME_TO_FIRST_TOKEN.labels(model=self.model).observe(now - self.t0)
        elif self.last is not None:
            metrics.INTER_TOKEN_LATENCY.labels(model=self.model).observe(now - self.last)
        self.last = now

    def finish(self, usage: Usage) -> None:
        self.scope_state.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        metrics.PROMPT_TOKENS.labels(model=self.model).inc(usage.prompt_tokens)
        metrics.COMPLETION_TOKENS.labels(model=self.model).inc(usage.completion_tokens)
        if self.first is not None and self.last is not None and self.last > self.first:
            decode_rate = max(usage.completion_tokens - 1, 0) / (self.last - self.first)
            metrics.OUTPUT_TOKENS_PER_SECOND.labels(model=self.model).observe(decode_rate)


async def _generate(
    request: Request, wire: SamplingFields, domain: GenerationRequest, *, chat: bool
) -> OrjsonResponse | StreamingResponse:
    state = get_state(request)
    backend: ChatBackend = state.registry.chat(domain.model)
    request.scope["state"]["model"] = backend.name
    shape = CompletionShape(model=domain.model, chat=chat)
    clock = _TokenClock(request, backend.name)
    cached = await response_cache.plan(request, wire, domain, backend, chat=chat)
    if cached.hit:
        return cached.respond(shape, wire)

    if not wire.stream:
        domain = replace(domain, buffered=True)
        result = await collect(cached.wrap(_clocked(backend.stream(domain), clock)))
        clock.finish(result.usage)
        if result.metadata:
            shape.extra["sovereign"] = result.metadata
        return OrjsonResponse(shape.body(result), headers=cached.headers)

    options = wire.stream_options
    include_usage = bool(options and options.include_usage)
    continuous = bool(options and options.continuous_usage_stats)
    stream = cached.wrap(_clocked(backend.stream(domain), clock))
    first_chunk = await anext(stream)  # errors before the first token become HTTP errors

    async def events() -> AsyncIterator[bytes]:
        chunk = first_chunk
        first = True
        try:
            while True:
                if chunk.finish_reason is not None:
                    clock.finish(chunk.usage)
                    if chunk.metadata:
                        shape.extra["sovereign"] = chunk.metadata
                for event in shape.events(chunk, first=first, include_usage=include_usage, continuous_usage=continuous):
                    yield event
                first = False
                if chunk.finish_reason is not None:
                    break
                chunk = await anext(stream)
        except SovereignError as exc:
            metrics.ENGINE_ERRORS.labels(engine=backend.name, kind=type(exc).__name__).inc()
            yield sse_event(exc.to_envelope())
        finally:
            await stream.aclose()
        yield DONE_EVENT

    return StreamingResponse(
        events(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **cached.headers},
    )


async def _clocked(
    chunks: AsyncIterator[GenerationChunk], clock: _TokenClock
) -> AsyncGenerator[GenerationChunk, None]:
    try:
        async for chunk in chunks:
            clock.tick(chunk)
            yield chunk
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()  # stops the engine when the client went away


@router.post("/v1/chat/completions", dependencies=[Depends(require_api_key)], response_model=None)
async def chat_completions(request: Request, body: ChatCompletionRequest) -> OrjsonResponse | StreamingResponse:
    """OpenAI chat completions (JSON, or SSE when ``stream`` is true)."""
    return await _generate(request, body, body.to_domain(), chat=True)


@router.post("/v1/completions", dependencies=[Depends(require_api_key)], response_model=None)
async def completions(request: Request, body: CompletionRequest) -> OrjsonResponse | StreamingResponse:
    """OpenAI legacy text completions (JSON, or SSE when ``stream`` is true)."""
    return await _generate(request, body, body.to_domain(), chat=False)
