"""What the response cache does for one generation request: decide, look up, and store.

:func:`plan_request` runs before the engine is touched. A hit carries the cached entry (the server
replays it with the live event shapes); a miss wraps the engine stream with :meth:`CachePlan.wrap`,
which stores the complete generation before the final chunk is passed on. ``status`` is what the
``X-Sovereign-Cache`` header says: ``hit-exact | hit-semantic | miss | bypass``.

What is cacheable: reproducible requests (temperature 0), or ``cache: "force"`` (required for
temperature > 0, even with a ``seed``); ``Cache-Control: no-cache`` / ``cache: "no-cache"`` skip
the read; ``no-store`` skips the write; both, or ``cache: "off"``, bypass, as do requests with
``tools`` or ``logprobs`` (an entry holds text, not tool calls or log-probabilities). A backend that is
:class:`~sovereign.backends.base.SourceScoped` (RAG, agents) adds its collection and index version
to the scope, so an ingest or a deletion makes older answers unreachable.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from sovereign.backends.base import ChatBackend, SourceScoped
from sovereign.cache.keys import CacheKey, cache_key, reproducible, request_mode
from sovereign.cache.service import Lookup, ResponseCache
from sovereign.types import GenerationChunk, GenerationRequest

HEADER = "X-Sovereign-Cache"


@dataclass(slots=True)
class CachePlan:
    """What the cache does for one request. ``status`` None: no cache configured (no header)."""

    cache: ResponseCache | None = None
    key: CacheKey | None = None
    status: str | None = None
    write: bool = False
    lookup: Lookup | None = None

    @property
    def hit(self) -> bool:
        return self.lookup is not None and self.lookup.entry is not None

    @property
    def headers(self) -> dict[str, str]:
        return {HEADER: self.status} if self.status else {}

    def info(self) -> dict[str, Any]:
        """The ``sovereign.cache`` object: status, and similarity and age (seconds) on a hit."""
        out: dict[str, Any] = {"status": self.status}
        if self.lookup is not None and self.lookup.entry is not None:
            out["similarity"] = self.lookup.similarity
            out["age_s"] = round(time.time() - self.lookup.entry.created, 3)
        return out

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
                            self.key, pieces=pieces, finish_reason=chunk.finish_reason, usage=chunk.usage,
                            metadata=chunk.metadata, vector=self.lookup.vector if self.lookup else None,
                        )
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


async def plan_request(
    cache: ResponseCache | None,
    request: GenerationRequest,
    backend: ChatBackend,
    *,
    tenant: str,
    chat: bool,
    cache_field: str | None,
    cache_control: str | None,
    metadata: dict[str, str] | None,
    semantic: bool = True,
) -> CachePlan:
    """Decide and look up for ``request`` served by ``backend``. Never raises for cache reasons
    (a storage failure is a miss; a scope that cannot be known is a bypass).

    Args:
        cache: the gateway's cache, None when off (the plan then sends no header).
        tenant: the caller's tenant: tenants never share answers.
        chat: chat completion (True) or text completion.
        cache_field / cache_control: the request's ``cache`` field and ``Cache-Control`` header.
        metadata: the request's ``metadata`` (a pipeline may read its collection from it).
        semantic: also serve near-duplicate (semantic) hits; False = exact hits only.
    """
    if cache is None:
        return CachePlan()
    mode = request_mode(cache_field, cache_control)
    if mode == "off" or (mode != "force" and not reproducible(request)):
        return CachePlan(cache, status="bypass")
    if request.tools or request.sampling.logprobs or any(m.parts for m in request.messages):
        return CachePlan(cache, status="bypass")  # entries hold text, keys hold text: calls, logprobs, images
    if request.deployment is not None:
        return CachePlan(cache, status="bypass")  # an evaluation of one deployment must reach it
    scope: tuple[str, int] | None = None
    if isinstance(backend, SourceScoped):
        try:
            scope = await backend.source_scope(metadata, tenant)
        except LookupError:
            return CachePlan(cache, status="bypass")
    key = cache_key(
        replace(request, model=backend.name), tenant=tenant, chat=chat,
        collection=scope[0] if scope else None, index_version=scope[1] if scope else None,
    )
    if key is None:
        return CachePlan(cache, status="bypass")
    write = mode != "no-store"
    if mode == "no-cache":
        return CachePlan(cache, key, status="miss", write=write)
    found = await cache.lookup(key, semantic=semantic)
    return CachePlan(cache, key, status=found.status, write=write, lookup=found)
