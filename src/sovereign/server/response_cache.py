"""The cache at the HTTP edge: decide, look up, replay, and store, for the generation routes.

The route calls :func:`plan` before touching the engine. A hit is answered by :meth:`CachePlan.respond`
(JSON, or an SSE replay built by the same :class:`~sovereign.server.streaming.CompletionShape` as a
live stream, so event shapes are identical). A miss wraps the engine stream with
:meth:`CachePlan.wrap`, which stores the complete generation before the final chunk is sent.
Every response of a cache-enabled gateway carries ``X-Sovereign-Cache: hit-exact | hit-semantic |
miss | bypass`` and ``sovereign.cache`` (status, similarity, age) in the body / final chunk.

What is cacheable: reproducible requests (temperature 0), or ``cache: "force"`` (required for
temperature > 0, even with a ``seed``);
``Cache-Control: no-cache`` / ``cache: "no-cache"`` skip the read; ``no-store`` skips the write;
both, or ``cache: "off"``, bypass. RAG models add their collection and index version to the scope.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from sovereign.backends.base import ChatBackend
from sovereign.cache.keys import CacheKey, cache_key, reproducible, request_mode
from sovereign.cache.service import Lookup, ResponseCache
from sovereign.errors import SovereignError
from sovereign.server.responses import OrjsonResponse
from sovereign.server.schemas import SamplingFields
from sovereign.server.state import AppState, get_state, tenant_of
from sovereign.server.streaming import DONE_EVENT, CompletionShape
from sovereign.types import GenerationChunk, GenerationRequest

HEADER = "X-Sovereign-Cache"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(slots=True)
class CachePlan:
    """What the cache does for one request. ``status`` None: no cache configured (no header)."""

    cache: ResponseCache | None = None
    key: CacheKey | None = None
    status: str | None = None
    write: bool = False
    lookup: Lookup | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hit(self) -> bool:
        return self.lookup is not None and self.lookup.entry is not None

    @property
    def headers(self) -> dict[str, str]:
        return {HEADER: self.status} if self.status else {}

    def info(self) -> dict[str, Any]:
        """The ``sovereign.cache`` object."""
        out: dict[str, Any] = {"status": self.status}
        if self.lookup is not None and self.lookup.entry is not None:
            out["similarity"] = self.lookup.similarity
            out["age_s"] = round(time.time() - self.lookup.entry.created, 3)
        return out

    def respond(self, shape: CompletionShape, wire: SamplingFields) -> OrjsonResponse | StreamingResponse:
        """Answer from the cached entry (JSON body, or SSE replay with the live event shapes)."""
        assert self.lookup is not None and self.lookup.entry is not None
        entry = self.lookup.entry
        shape.extra["sovereign"] = {**entry.metadata, "cache": self.info()}
        if not wire.stream:
            return OrjsonResponse(shape.body(entry.to_result()), headers=self.headers)
        options = wire.stream_options
        include_usage = bool(options and options.include_usage)
        continuous = bool(options and options.continuous_usage_stats)
        chunks = entry.replay_chunks()

        async def events() -> AsyncIterator[bytes]:
            for i, chunk in enumerate(chunks):
                for event in shape.events(
                    chunk, first=i == 0, include_usage=include_usage, continuous_usage=continuous
                ):
                    yield event
            yield DONE_EVENT

        return StreamingResponse(events(), media_type="text/event-stream", headers={**SSE_HEADERS, **self.headers})

    async def wrap(self, chunks: AsyncIterator[GenerationChunk]) -> AsyncGenerator[GenerationChunk, None]:
        """Pass engine chunks through; on the final one add ``cache`` metadata and store the answer."""
        pieces: list[str] = []
        try:
            async for chunk in chunks:
                pieces.append(chunk.text)
                if chunk.finish_reason is not None and self.status is not None:
                    chunk.metadata = {**(chunk.metadata or {}), "cache": self.info()}
                    if self.write and self.cache is not None and self.key is not None:
                        await self.cache.store(
                            self.key,
                            pieces=pieces,
                            finish_reason=chunk.finish_reason,
                            usage=chunk.usage,
                            metadata=chunk.metadata,
                            vector=self.lookup.vector if self.lookup else None,
                        )
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


async def _rag_scope(state: AppState, backend: ChatBackend, wire: SamplingFields) -> tuple[str, Any] | None:
    """``(collection, index_version)`` for a RAG model, None for a plain model.

    A backend may answer itself with ``async cache_scope(wire) -> (collection, version)``. Otherwise a
    backend whose ``capabilities.engine`` names ``rag`` or ``agent`` is scoped by the collection it
    answers from (its ``collection`` / ``deps.collection`` attribute; else the request's
    ``metadata.collection``; else ``rag.default_collection``) and that collection's index version,
    read from the ``rag`` service's store (``rag.store.index_version(collection)``, an int that
    grows with every ingest or deletion).

    Raises:
        LookupError: a RAG model whose index version cannot be known (no ``rag`` service, or its
            store failed): the request is not cached.
    """
    hook = getattr(backend, "cache_scope", None)
    if hook is not None:
        scope = await hook(wire)
        return None if scope is None else (str(scope[0]), scope[1])
    engine = backend.capabilities.engine.lower()
    if "rag" not in engine and "agent" not in engine and "rag" not in backend.name:
        return None
    rag = state.services.get("rag")
    store = getattr(rag, "store", None)
    if store is None or not hasattr(store, "index_version"):
        raise LookupError("no index version for a RAG model")
    metadata = getattr(wire, "metadata", None) or {}
    collection = (
        getattr(backend, "collection", None)
        or getattr(getattr(backend, "deps", None), "collection", None)
        or metadata.get("collection")
        or state.settings.rag.default_collection
    )
    try:
        version = await store.index_version(str(collection))
    except SovereignError as exc:
        raise LookupError(f"index version of {collection!r} unavailable: {exc}") from exc
    return str(collection), version


async def plan(
    request: Request, wire: SamplingFields, domain: GenerationRequest, backend: ChatBackend, *, chat: bool
) -> CachePlan:
    """Decide and look up. Never raises for cache reasons (a failure is a miss)."""
    state = get_state(request)
    cache: ResponseCache | None = state.services.get("cache")
    if cache is None:
        return CachePlan()
    hook_rag_invalidation(state)
    mode = request_mode(wire.cache, request.headers.get("cache-control"))
    if mode == "off" or (mode != "force" and not reproducible(domain)):
        return CachePlan(cache, status="bypass")
    try:
        rag = await _rag_scope(state, backend, wire)
    except LookupError:
        return CachePlan(cache, status="bypass")
    key = cache_key(
        replace(domain, model=backend.name),
        tenant=tenant_of(request),
        chat=chat,
        collection=rag[0] if rag else None,
        index_version=rag[1] if rag else None,
    )
    if key is None:
        return CachePlan(cache, status="bypass")
    write = mode != "no-store"
    if mode == "no-cache":
        return CachePlan(cache, key, status="miss", write=write)
    found = await cache.lookup(key)
    return CachePlan(cache, key, status=found.status, write=write, lookup=found)


def hook_rag_invalidation(state: AppState) -> None:
    """Register the cache's invalidation on ``state.services["rag"].on_change`` once (either plugin
    order: called at install and again at the first request)."""
    cache = state.services.get("cache")
    rag = state.services.get("rag")
    callbacks = getattr(rag, "on_change", None)
    if cache is None or callbacks is None or cache.hooked_to is rag:
        return
    callbacks.append(cache.on_documents_changed)
    cache.hooked_to = rag
