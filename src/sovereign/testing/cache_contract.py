"""The contract every cache backend passes (``sqlite`` and ``redis`` inherit it in tests/cache).

Usage::

    class TestMyBackend(CacheBackendContract):
        @pytest.fixture
        async def backend(self):            # opened, empty, max_entries == CacheBackendContract.MAX
            b = MyBackend(..., max_entries=self.MAX)
            await b.open(); await b.clear()
            yield b
            await b.close()

Vectors are random unit float32 ``[384]``; no embedding model is needed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from sovereign.cache.entry import CacheEntry
from sovereign.types import Usage


def unit(seed: int, dimensions: int = 384) -> np.ndarray:
    """A deterministic random unit vector."""
    v = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return v / np.linalg.norm(v)


def make_entry(
    key: str,
    scope: str = "s1",
    *,
    seed: int = 0,
    ttl: float = 60.0,
    docs: list[str] | None = None,
    vector: np.ndarray | None = None,
) -> CacheEntry:
    """An entry whose answer is ``answer-<key>``."""
    now = time.time()
    return CacheEntry(
        key=key,
        scope=scope,
        query=f"question {key}",
        pieces=["answer", f"-{key}"],
        finish_reason="stop",
        usage=Usage(7, 2),
        metadata={"sources": [{"doc_id": d} for d in docs or []]},
        doc_ids=list(docs or []),
        vector=unit(seed) if vector is None else vector,
        created=now,
        expires=now + ttl,
    )


class CacheBackendContract:
    """Behaviour shared by all backends. Subclasses provide the ``backend`` fixture."""

    MAX = 3
    pytestmark = pytest.mark.anyio

    async def test_put_then_get_round_trips(self, backend: Any) -> None:
        await backend.put(make_entry("k1", docs=["d1"]))
        got = await backend.get("k1")
        assert got is not None and got.text == "answer-k1" and got.scope == "s1"
        assert got.usage.completion_tokens == 2 and got.doc_ids == ["d1"]
        assert got.vector is not None and np.allclose(got.vector, unit(0))
        assert await backend.get("absent") is None

    async def test_expired_entries_are_never_returned(self, backend: Any) -> None:
        await backend.put(make_entry("old", ttl=-1.0))
        assert await backend.get("old") is None
        assert await backend.nearest("s1", unit(0)) == []

    async def test_nearest_stays_inside_its_scope(self, backend: Any) -> None:
        await backend.put(make_entry("a", "s1", seed=1))
        await backend.put(make_entry("b", "s2", seed=1))
        found = await backend.nearest("s1", unit(1))
        assert [(e.key, round(score, 3)) for e, score in found] == [("a", 1.0)]
        assert await backend.nearest("s3", unit(1)) == []

    async def test_nearest_ranks_best_first(self, backend: Any) -> None:
        target = unit(5)
        close = target + 0.1 * unit(6)
        await backend.put(make_entry("far", seed=7))
        await backend.put(make_entry("near", vector=close / np.linalg.norm(close)))
        found = await backend.nearest("s1", target)
        assert found[0][0].key == "near" and found[0][1] > 0.9 > found[-1][1]
        assert [e.key for e, _ in await backend.nearest("s1", target, min_score=0.9)] == ["near"]
        assert await backend.nearest("s1", unit(8), min_score=0.9) == []  # nothing close enough

    async def test_replacing_a_key_keeps_one_entry(self, backend: Any) -> None:
        await backend.put(make_entry("k", seed=1))
        await backend.put(make_entry("k", seed=2))
        assert await backend.count() == 1
        assert (await backend.nearest("s1", unit(2)))[0][1] > 0.999

    async def test_lru_evicts_least_recently_used(self, backend: Any) -> None:
        for i in range(self.MAX):
            await backend.put(make_entry(f"k{i}", seed=i))
            time.sleep(0.002)
        assert await backend.get("k0") is not None  # k0 now most recent; k1 is the LRU
        time.sleep(0.002)
        await backend.put(make_entry("new", seed=99))
        assert await backend.count() == self.MAX
        assert await backend.get("k1") is None
        assert await backend.get("k0") is not None
        assert await backend.nearest("s1", unit(1)) == [] or all(
            e.key != "k1" for e, _ in await backend.nearest("s1", unit(1))
        )

    async def test_delete_documents_evicts_dependent_answers(self, backend: Any) -> None:
        await backend.put(make_entry("x", seed=1, docs=["doc-a", "doc-b"]))
        await backend.put(make_entry("y", seed=2, docs=["doc-c"]))
        assert await backend.delete_documents(["doc-b"]) == 1
        assert await backend.get("x") is None and await backend.get("y") is not None
        assert all(e.key != "x" for e, _ in await backend.nearest("s1", unit(1)))
        assert await backend.delete_documents(["doc-zzz"]) == 0

    async def test_clear_empties_everything(self, backend: Any) -> None:
        await backend.put(make_entry("a", seed=1))
        await backend.put(make_entry("b", seed=2))
        assert await backend.clear() == 2
        assert await backend.count() == 0
        assert await backend.nearest("s1", unit(1)) == []
        stats = await backend.stats()
        assert stats["entries"] == 0 and stats["backend"] == backend.name
