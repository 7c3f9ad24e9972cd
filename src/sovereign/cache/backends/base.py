"""The Protocol every cache storage backend implements (contract: ``sovereign.testing.cache_contract``).

A backend stores :class:`~sovereign.cache.entry.CacheEntry` rows and answers two lookups: by exact
key, and by nearest query vector within a scope. It enforces TTL (dead entries are never returned)
and the entry limit (least recently used evicted first), and counts evictions in
``sovereign_cache_evictions_total{reason}``. Errors are raised as
:class:`~sovereign.errors.StorageError`; the service turns them into misses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sovereign.cache.entry import CacheEntry


@runtime_checkable
class CacheBackend(Protocol):
    """Storage for cached responses."""

    name: str

    async def open(self) -> None:
        """Connect / create tables and load the in-process vector index. Raises StorageError."""

    async def close(self) -> None:
        """Release connections and threads."""

    async def get(self, key: str) -> CacheEntry | None:
        """The live entry with exact ``key`` (and mark it recently used), or None."""

    async def nearest(
        self, scope: str, vector: np.ndarray, k: int = 4, min_score: float = -1.0
    ) -> list[tuple[CacheEntry, float]]:
        """Up to ``k`` live entries of ``scope`` nearest to the unit ``vector`` with cosine >=
        ``min_score``, ``(entry, cosine)`` best first (storage is read only for those). Does not mark
        them used (the service does, for the one it serves)."""

    async def touch(self, key: str) -> None:
        """Mark ``key`` recently used (LRU)."""

    async def put(self, entry: CacheEntry) -> None:
        """Insert or replace ``entry``; evicts least recently used entries above the limit."""

    async def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Delete every entry whose provenance names one of ``doc_ids``; returns how many."""

    async def clear(self) -> int:
        """Delete everything; returns how many entries were deleted."""

    async def count(self) -> int:
        """Live and not yet swept entries."""

    async def stats(self) -> dict[str, Any]:
        """Backend-specific numbers for ``sovereign cache stats`` (entries, bytes, ...)."""
