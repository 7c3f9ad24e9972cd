"""Both cache backends pass the shared contract (real SQLite file, real redis-server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sovereign.cache.backends.redis import RedisCacheBackend
from sovereign.cache.backends.sqlite import SqliteCacheBackend
from sovereign.testing.cache_contract import CacheBackendContract, make_entry

pytestmark = pytest.mark.anyio


class TestSqliteBackend(CacheBackendContract):
    @pytest.fixture
    async def backend(self, tmp_path: Path) -> AsyncIterator[SqliteCacheBackend]:
        backend = SqliteCacheBackend(tmp_path / "cache.sqlite3", max_entries=self.MAX)
        await backend.open()
        yield backend
        await backend.close()

    async def test_index_is_rebuilt_from_the_file(self, tmp_path: Path) -> None:
        first = SqliteCacheBackend(tmp_path / "c.sqlite3", max_entries=10)
        await first.open()
        await first.put(make_entry("k", seed=3))
        await first.close()
        second = SqliteCacheBackend(tmp_path / "c.sqlite3", max_entries=10)
        await second.open()
        try:
            assert [e.key for e, _ in await second.nearest("s1", make_entry("q", seed=3).vector)] == ["k"]
        finally:
            await second.close()


@pytest.mark.integration
class TestRedisBackend(CacheBackendContract):
    @pytest.fixture
    async def backend(self, redis_proc: Any) -> AsyncIterator[RedisCacheBackend]:
        backend = RedisCacheBackend(
            redis_proc.url, max_entries=self.MAX, timeout_s=1.0, prefix=f"t:{uuid.uuid4().hex[:8]}:"
        )
        await backend.open()
        yield backend
        await backend.clear()
        await backend.close()

    async def test_two_processes_share_entries_and_vectors(self, redis_proc: Any) -> None:
        """Two gateways (two backends, same prefix): a write in one is found by the other."""
        prefix = f"t:{uuid.uuid4().hex[:8]}:"
        a = RedisCacheBackend(redis_proc.url, max_entries=100, timeout_s=1.0, prefix=prefix)
        b = RedisCacheBackend(redis_proc.url, max_entries=100, timeout_s=1.0, prefix=prefix)
        await a.open()
        await b.open()
        try:
            await a.put(make_entry("shared", seed=4, docs=["d"]))
            assert (await b.get("shared")) is not None  # pulls the stream tail too
            assert [e.key for e, _ in await b.nearest("s1", make_entry("q", seed=4).vector)] == ["shared"]
            await a.delete_documents(["d"])
            await b.get("other")
            assert await b.nearest("s1", make_entry("q", seed=4).vector) == []
            late = RedisCacheBackend(redis_proc.url, max_entries=100, timeout_s=1.0, prefix=prefix)
            await a.put(make_entry("again", seed=5))
            await late.open()  # a process started later loads the index with SCAN
            try:
                assert [e.key for e, _ in await late.nearest("s1", make_entry("q", seed=5).vector)] == ["again"]
            finally:
                await late.close()
            await a.clear()
        finally:
            await a.close()
            await b.close()
