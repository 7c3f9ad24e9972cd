"""The path of a generation request through the gateway, declared in order in one place.

``POST /v1/chat/completions`` and ``POST /v1/completions`` pass these stages, each implemented in
its room::

    1. auth      tenant of the API key                  server.state.require_api_key (route dependency)
    2. parse     OpenAI wire -> GenerationRequest        server.schemas (route body)
    3. route     public model -> backend, and what it    backends.registry (routers, pipelines, aliases),
                 must support                            backends.base.required_features
                 (an admin may pin one deployment:       X-Sovereign-Deployment, pinned_deployment)
    3b. flags    ai_inference, vector_search, cache      server.flag_gates (sovereign.flags)
                 gates; rolled-out flags' variants
    4. lookup    response cache: hit, miss or bypass     cache.request_plan.plan_request
    5. generate  backend stream (router -> deployment;   backends / rag / agents; a forced tool call
                 a pipeline model calls its own model)   is schema-constrained (backends.tool_choice)
    6. meter     TTFT, ITL, tokens                       observability.token_clock
    7. store     complete answer into the cache          cache.request_plan.CachePlan.wrap
    8. respond   JSON body or SSE events                 server.streaming

For streaming, the first chunk is awaited *before* the 200 is sent, so every error that can happen
before the first token (context length, overload, engine down, fallback exhausted) is a proper HTTP
error with the OpenAI envelope; a later one is an SSE error event. Extra response data from
pipelines (sources, timings, validator verdict, cache status) is in the top-level ``sovereign``
field, and in the final chunk's ``sovereign`` field when streaming.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from sovereign.backends.base import ChatBackend, collect, required_features
from sovereign.backends.tool_choice import as_tool_call, constrained, forced_tools
from sovereign.cache.request_plan import CachePlan, plan_request
from sovereign.errors import InvalidRequestError, PermissionDeniedError, SovereignError, UnsupportedParameterError
from sovereign.observability import metrics
from sovereign.observability.drift import RECORDER as DRIFT
from sovereign.observability.token_clock import TokenClock
from sovereign.server.fan_out import fan_out
from sovereign.server.flag_gates import Gates, gates_for
from sovereign.server.responses import OrjsonResponse
from sovereign.server.state import authenticate, check_model_allowed, get_state
from sovereign.server.streaming import CompletionShape, ResponseShape, sse_response
from sovereign.types import DEPLOYMENT_HEADER, GenerationChunk, GenerationRequest


async def generate(
    request: Request, domain: GenerationRequest, shape: ResponseShape, *, tenant: str, stream: bool,
    cache_field: str | None = None, metadata: dict[str, str] | None = None, n: int = 1,
) -> OrjsonResponse | StreamingResponse:
    """Stages 3-8 for one parsed, authenticated request (see the module docstring).

    Args:
        shape: how the API renders the answer (OpenAI completions, Responses, Anthropic Messages).
        stream: SSE events (True) or one JSON body.
        cache_field: the request's ``cache`` control field. metadata: the chat request's
            ``metadata`` (a pipeline may read its collection there).
        n: choices (OpenAI completions only; :mod:`sovereign.server.fan_out`, no cache).

    Raises:
        UnsupportedParameterError: the model cannot serve a feature the request needs.
        SovereignError: anything before the first token (the route returns its envelope).
    """
    state = get_state(request)
    domain = replace(domain, tenant=tenant, deployment=await pinned_deployment(request))
    check_limits(request, domain)
    DRIFT.observe_prompt(domain)  # drift: the last user message, its language detected off the request path
    backend = state.registry.chat(domain.model)  # 3. route
    request.scope["state"]["model"] = backend.name
    forced = forced_tools(domain)
    engine_request = constrained(domain, forced) if forced else domain
    missing = backend.capabilities.missing(required_features(engine_request))
    if missing:
        raise UnsupportedParameterError(f"Model {domain.model} does not support {', '.join(missing)}.",
                                        param=missing[0])
    gates = gates_for(request, backend, user=domain.user, tenant=tenant)  # 3b. flags
    try:
        response = await _generate(request, domain, engine_request, backend, shape, gates, tenant=tenant,
                                   stream=stream, cache_field=cache_field, metadata=metadata, n=n, forced=forced)
    except SovereignError:
        gates.record("error")
        raise
    gates.record("ok")
    return response


async def _generate(
    request: Request, domain: GenerationRequest, engine_request: GenerationRequest, backend: ChatBackend,
    shape: ResponseShape, gates: Gates, *, tenant: str, stream: bool, cache_field: str | None,
    metadata: dict[str, str] | None, n: int, forced: list[dict[str, Any]] | None,
) -> OrjsonResponse | StreamingResponse:
    """Stages 4-8 (module docstring) once the route and the flags have been decided."""
    if n > 1:
        if not isinstance(shape, CompletionShape):
            raise UnsupportedParameterError("n > 1 is for chat and text completions.", param="n")
        fan_clock = TokenClock(backend.name, request.scope.setdefault("state", {}))

        def open_stream(one: GenerationRequest) -> AsyncIterator[GenerationChunk]:
            generated = backend.stream(one)
            return metered(as_tool_call(generated) if forced else generated, fan_clock)

        return await fan_out(open_stream, engine_request, shape, n, stream=stream, finish=fan_clock.finish)
    plan = await plan_request(  # 4. lookup
        get_state(request).cache if gates.cache else None, domain, backend, tenant=tenant, chat=domain.is_chat,
        cache_field=cache_field, cache_control=request.headers.get("cache-control"), metadata=metadata,
        semantic=gates.semantic,
    )
    if plan.hit:
        return replay(plan, shape, stream=stream)
    clock = TokenClock(backend.name, request.scope.setdefault("state", {}))
    if not stream:
        engine_request = replace(engine_request, buffered=True)
    generated = backend.stream(engine_request)  # 5. generate
    if forced:
        generated = as_tool_call(generated)
    chunks = plan.wrap(metered(generated, clock))  # 6. meter, 7. store
    if not stream:  # 8. respond
        result = await collect(chunks)
        clock.finish(result.usage)
        if result.metadata:
            shape.extra["sovereign"] = result.metadata
        return OrjsonResponse(shape.body(result), headers=plan.headers)
    first = await anext(chunks)  # errors before the first token become HTTP errors
    return sse_response(events(first, chunks, shape, clock, backend.name), plan.headers)


async def pinned_deployment(request: Request) -> str | None:
    """The ``X-Sovereign-Deployment`` header: pin the request to one deployment (an evaluation of a
    candidate, :mod:`sovereign.evaluation`). Such a request bypasses the response cache.

    Raises:
        PermissionDeniedError (403): the caller's key is not of scope admin.
        InvalidRequestError (400): no deployment has that name.
    """
    name = request.headers.get(DEPLOYMENT_HEADER)
    if name is None:
        return None
    if not (await authenticate(request)).admin:
        raise PermissionDeniedError(f"The {DEPLOYMENT_HEADER} header needs an API key of scope admin.",
                                    param=DEPLOYMENT_HEADER)
    routing = get_state(request).routing
    known = sorted(routing.deployments) if routing is not None else []
    if name not in known:
        raise InvalidRequestError(f"{DEPLOYMENT_HEADER}: no deployment {name!r} (deployments: "
                                  f"{', '.join(known) or 'none configured'}).", param=DEPLOYMENT_HEADER)
    return name


def check_limits(request: Request, domain: GenerationRequest) -> None:
    """The caller's model allow-list and the request ceilings (``server.max_messages``,
    ``server.max_tokens_ceiling``). Raises PermissionDeniedError (403) / InvalidRequestError (400)."""
    check_model_allowed(request, domain.model)
    server = get_state(request).settings.server
    if len(domain.messages) > server.max_messages:
        raise InvalidRequestError(f"{len(domain.messages)} messages exceed server.max_messages "
                                  f"({server.max_messages}).", param="messages")
    asked = domain.sampling.max_tokens
    if asked is not None and asked > server.max_tokens_ceiling:
        raise InvalidRequestError(f"max_tokens {asked} exceeds server.max_tokens_ceiling "
                                  f"({server.max_tokens_ceiling}).", param="max_tokens")


async def metered(chunks: AsyncIterator[GenerationChunk], clock: TokenClock) -> AsyncGenerator[GenerationChunk, None]:
    """Stage 6: pass chunks through the clock; closing this generator stops the engine."""
    try:
        async for chunk in chunks:
            clock.tick(chunk)
            yield chunk
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()  # stops the engine when the client went away


async def events(
    first: GenerationChunk, stream: AsyncGenerator[GenerationChunk, None], shape: ResponseShape,
    clock: TokenClock, engine: str,
) -> AsyncIterator[bytes]:
    """Stage 8 for a live stream: SSE events from the first chunk on; an error after the first
    byte is one error event (the status is already 200), then the closing events."""
    chunk, is_first = first, True
    try:
        while True:
            if chunk.finish_reason is not None:
                clock.finish(chunk.usage)
                if chunk.metadata:
                    shape.extra["sovereign"] = chunk.metadata
            for event in shape.events(chunk, first=is_first):
                yield event
            is_first = False
            if chunk.finish_reason is not None:
                break
            chunk = await anext(stream)
    except SovereignError as exc:
        metrics.ENGINE_ERRORS.labels(engine=engine, kind=type(exc).__name__).inc()
        yield shape.error_event(exc)
    finally:
        await stream.aclose()
    for event in shape.closing():
        yield event


def replay(plan: CachePlan, shape: ResponseShape, *, stream: bool) -> OrjsonResponse | StreamingResponse:
    """Stage 8 for a cache hit: the cached entry as a JSON body, or as SSE events with the live shapes."""
    assert plan.lookup is not None and plan.lookup.entry is not None
    entry = plan.lookup.entry
    shape.extra["sovereign"] = {**entry.metadata, "cache": plan.info()}
    if not stream:
        return OrjsonResponse(shape.body(entry.to_result()), headers=plan.headers)
    chunks = entry.replay_chunks()

    async def replayed() -> AsyncIterator[bytes]:
        for i, chunk in enumerate(chunks):
            for event in shape.events(chunk, first=i == 0):
                yield event
        for event in shape.closing():
            yield event

    return sse_response(replayed(), plan.headers)
