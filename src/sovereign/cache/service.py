"""The response cache service: two-layer lookup, store, provenance invalidation; failures are misses.

``lookup`` tries the exact layer (one key-value read), then, for short queries, the semantic layer:
embed the query (all-MiniLM-L6-v2, 384-d unit vector), take the nearest entries of the same scope,
and serve the best one whose cosine is >= ``similarity_threshold`` and that the contrast guard
(:func:`~sovereign.cache.semantic.contrast`) does not reject. Every backend call is bounded by
``timeout_ms``; a timeout or a :class:`~sovereign.errors.StorageError` is a miss, counted in
``sovereign_cache_errors_total{backend}`` and logged (never raised to the request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from sovereign.backends.base import EmbeddingBackend
from sovereign.cache.backends.base import CacheBackend
from sovereign.cache.entry import CacheEntry, doc_ids_from_metadata
from sovereign.cache.keys import CacheKey
from sovereign.cache.semantic import contrast
from sovereign.config import CacheSettings
from sovereign.errors import SovereignError
from sovereign.observability import metrics
from sovereign.observability.tracing import span
from sovereign.types import Usage

T = TypeVar("T")
log = logging.getLogger("sovereign.cache")
Status = Literal["hit-exact", "hit-semantic", "miss", "bypass"]
MAX_SEMANTIC_TOKENS = 200  # longer queries are exact-only: MiniLM truncates at 256 tokens
CACHEABLE_FINISH = ("stop", "length")


@dataclass(slots=True)
class Lookup:
    """The outcome of one lookup. ``vector`` is the query embedding (reused by ``store``)."""

    status: Status
    entry: CacheEntry | None = None
    similarity: float | None = None
    vector: np.ndarray | None = None
    error: str | None = None


class ResponseCache:
    """Exact + semantic response cache over one :class:`CacheBackend`.

    Args:
        backend: storage (sqlite or redis).
        embedder: the query embedding model (unit vectors).
        settings: the ``cache`` settings section (threshold, TTL, timeout).
    """

    def __init__(self, backend: CacheBackend, embedder: EmbeddingBackend | None, settings: CacheSettings) -> None:
        self.backend = backend
        self.embedder = embedder
        self.settings = settings
        self.timeout_s = settings.timeout_ms / 1000
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _in_background(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``awaitable`` on the running loop without making the caller wait (kept until done,
        its exception retrieved; awaited by :meth:`close`)."""
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    async def start(self) -> None:
        """Open the backend; a failure is logged and counted, and the cache starts as all-miss."""
        self._loop = asyncio.get_running_loop()
        await self._guard(self.backend.open(), "open", timeout_s=max(30.0, self.timeout_s))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backend.close()

    async def _guard(self, awaitable: Awaitable[T], what: str, timeout_s: float | None = None) -> T | None:
        """Await with the cache's time budget; errors become None + metric + warning."""
        ok, value = await self._attempt(awaitable, what, timeout_s)
        return value if ok else None

    async def _attempt(
        self, awaitable: Awaitable[T], what: str, timeout_s: float | None = None
    ) -> tuple[bool, T | None]:
        """``(True, value)``, or ``(False, None)`` after counting and logging the failure."""
        try:
            return True, await asyncio.wait_for(awaitable, timeout_s or self.timeout_s)
        except (SovereignError, TimeoutError, OSError) as exc:
            metrics.CACHE_ERRORS.labels(backend=self.backend.name).inc()
            kind = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc}"
            log.warning("cache %s %s (served as a miss)", what, kind)
            return False, None

    def semantic_eligible(self, query: str) -> bool:
        """Short enough to be embedded whole (longer texts would be truncated and collide)."""
        if self.embedder is None:
            return False
        return len(query) <= MAX_SEMANTIC_TOKENS * 8 and self.embedder.count_tokens(query) <= MAX_SEMANTIC_TOKENS

    async def embed(self, query: str) -> np.ndarray | None:
        """The query's unit vector, or None (ineligible, or the embedder failed: counted)."""
        if not self.semantic_eligible(query):
            return None
        assert self.embedder is not None
        try:
            vectors, _ = await self.embedder.embed([query])
        except SovereignError as exc:
            metrics.CACHE_ERRORS.labels(backend="embedder").inc()
            log.warning("cache query embedding failed (exact layer only): %s", exc)
            return None
        return np.asarray(vectors[0], dtype=np.float32)

    async def lookup(self, key: CacheKey, *, semantic: bool = True) -> Lookup:
        """Exact, then semantic lookup of ``key``; never raises."""
        began = time.perf_counter()
        attributes: dict[str, Any] = {"cache.backend": self.backend.name}
        with span("cache.lookup", **attributes) as current:
            result = await self._lookup(key, semantic)
            current.set_attribute("cache.status", result.status)
        metrics.CACHE_LOOKUP_DURATION.labels(backend=self.backend.name).observe(time.perf_counter() - began)
        return result

    async def _lookup(self, key: CacheKey, semantic: bool) -> Lookup:
        entry = await self._guard(self.backend.get(key.exact), "exact lookup")
        if entry is not None:
            metrics.CACHE_LOOKUPS.labels(layer="exact", result="hit").inc()
            return Lookup("hit-exact", entry=entry, similarity=1.0)
        metrics.CACHE_LOOKUPS.labels(layer="exact", result="miss").inc()
        if not semantic:
            return Lookup("miss")
        vector = await self.embed(key.query)
        if vector is None:
            return Lookup("miss")
        threshold = self.settings.similarity_threshold
        found = await self._guard(self.backend.nearest(key.scope, vector, min_score=threshold), "semantic lookup")
        for candidate, score in found or []:
            if contrast(key.query, candidate.query) is None:  # nearest() kept only cosine >= threshold
                metrics.CACHE_LOOKUPS.labels(layer="semantic", result="hit").inc()
                self._in_background(self._guard(self.backend.touch(candidate.key), "touch"))  # LRU recency
                return Lookup("hit-semantic", entry=candidate, similarity=round(score, 4), vector=vector)
        metrics.CACHE_LOOKUPS.labels(layer="semantic", result="miss").inc()
        return Lookup("miss", vector=vector)

    async def store(
        self,
        key: CacheKey,
        *,
        pieces: list[str],
        finish_reason: str,
        usage: Usage,
        metadata: dict[str, Any] | None,
        vector: np.ndarray | None = None,
    ) -> bool:
        """Store a complete generation; returns whether it was stored (errors: counted, False)."""
        if finish_reason not in CACHEABLE_FINISH or not "".join(pieces).strip():
            return False
        if vector is None:
            vector = await self.embed(key.query)
        kept = {k: v for k, v in (metadata or {}).items() if k != "cache"}
        now = time.time()
        entry = CacheEntry(
            key=key.exact,
            scope=key.scope,
            query=key.query,
            pieces=list(pieces),
            finish_reason=finish_reason,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens),
            metadata=kept,
            doc_ids=doc_ids_from_metadata(kept),
            vector=vector,
            created=now,
            expires=now + self.settings.ttl_s,
        )
        attributes: dict[str, Any] = {"cache.backend": self.backend.name}
        with span("cache.store", **attributes):
            ok, _ = await self._attempt(self.backend.put(entry), "store", timeout_s=self.timeout_s * 4)
        return ok

    async def invalidate_documents(self, doc_ids: Iterable[str]) -> int:
        """Evict every answer built from any of ``doc_ids`` (provenance). Raises StorageError: the
        caller (ingestion) must know when invalidation did not happen."""
        return await self.backend.delete_documents(list(doc_ids))

    def on_documents_changed(self, doc_ids: Sequence[str], collection: str | None = None) -> Any:
        """The ``rag`` service's ``on_change`` callback, called as ``callback(doc_ids, collection)``
        (the order of :data:`sovereign.rag.service.ChangeCallback`).

        Args:
            doc_ids: ids of the documents added, updated or deleted (``DocumentRecord.doc_id``).
            collection: their collection (unused: entries are keyed by document id, and the index
                version in the scope key covers the rest).

        Callable from the event loop (returns an awaitable task) or from another thread (returns a
        ``concurrent.futures.Future``); the invalidation is scheduled at once on the cache's loop. The
        result raises StorageError on failure; failures are also counted and logged, so a caller that
        does not wait loses nothing silently.

        Raises:
            TypeError: ``doc_ids`` is a single string (arguments swapped: it would be read as letters).
        """
        del collection
        if isinstance(doc_ids, str):
            raise TypeError("on_documents_changed(doc_ids, collection): doc_ids must be a list of ids, not a str")
        coro = self._invalidate_logged(list(doc_ids))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (self._loop is None or running is self._loop):
            return self._in_background(coro)
        if self._loop is None:
            coro.close()
            raise RuntimeError("the cache is not started")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if future.cancelled():
            return
        exc = future.exception()  # retrieved here; SovereignError is counted and logged where raised
        if exc is not None and not isinstance(exc, SovereignError):
            log.error("cache background task failed: %r", exc)

    async def _invalidate_logged(self, doc_ids: list[str]) -> int:
        try:
            n = await self.invalidate_documents(doc_ids)
        except SovereignError as exc:
            metrics.CACHE_ERRORS.labels(backend=self.backend.name).inc()
            log.error("cache invalidation of %d documents failed: %s", len(doc_ids), exc)
            raise
        log.info("cache invalidated %d entries for %d changed documents", n, len(doc_ids))
        return n

    async def clear(self) -> int:
        return await self.backend.clear()

    async def stats(self) -> dict[str, Any]:
        out = await self.backend.stats()
        out.update(
            similarity_threshold=self.settings.similarity_threshold,
            ttl_s=self.settings.ttl_s,
            timeout_ms=self.settings.timeout_ms,
        )
        return out
