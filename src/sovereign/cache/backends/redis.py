"""Shared cache backend: entries in Redis, the vector index in each gateway process.

Debian's Redis 7 has no vector search module, so Redis stores everything durable (entries with
their query vectors, the LRU and expiry sorted sets, provenance sets) and every gateway process
keeps its own in-process :class:`~sovereign.cache.semantic.VectorIndex`, kept in sync through a
Redis stream:

- every write (add, delete, evict, clear) runs in one Lua script that also ``INCR``s a sequence
  number and ``XADD``s an event (the add event carries scope, vector and expiry) to ``<prefix>log``;
- before a lookup a process reads the stream tail from its last id, in the same round trip as the
  exact ``HGETALL`` (pipelined), and applies the events to its index;
- a gap in the sequence (the stream was trimmed past this process) triggers a background full
  resync (``SCAN`` of the entries); during it the semantic layer answers "miss", the exact layer
  keeps working;
- Redis restarting empty restarts the sequence at 1: a random *epoch* (``<prefix>epoch``, next to
  ``<prefix>seq``, set with ``SET NX`` by the first write or resync after a start) is read in the
  same round trip as the stream tail, and a changed epoch starts a resync. A restart from an
  older snapshot keeps its epoch but replays sequence numbers: a new event (stream id above the
  last one applied) whose number is not the next one starts a resync too.

Scaling: a lookup is 1 round trip (exact) or 2 (semantic: sync + fetch the candidates); a write
fans out to every process through the stream. Each process holds every vector: ~2.5 KB per entry
(~250 MB at 100k entries), and a restart loads them in seconds. Beyond a few million entries or
tens of processes, shard by scope (one prefix per tenant) or move the index to a vector database.
Keys are not hash-tagged: use a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sovereign.cache.entry import CacheEntry, vector_bytes
from sovereign.cache.semantic import VectorIndex
from sovereign.errors import StorageError
from sovereign.observability import metrics

T = TypeVar("T")
log = logging.getLogger("sovereign.cache")

_DROP = """
local function epoch(p, e) redis.call('SET', p .. 'epoch', e, 'NX') end
local function drop(p, maxlen, k)
  local ek = p .. 'e:' .. k
  local d = redis.call('HGET', ek, 'docs')
  if d then for doc in string.gmatch(d, '%S+') do redis.call('SREM', p .. 'd:' .. doc, k) end end
  local existed = redis.call('DEL', ek)
  redis.call('ZREM', p .. 'lru', k)
  redis.call('ZREM', p .. 'exp', k)
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('XADD', p .. 'log', 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'op', 'del', 'key', k)
  return existed
end
"""
_PUT = (
    _DROP
    + """
local p, now, maxn, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local key, scope, payload, vec, exp, docs = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
epoch(p, ARGV[11])
local ek = p .. 'e:' .. key
if redis.call('EXISTS', ek) == 1 then drop(p, maxlen, key) end
redis.call('HSET', ek, 'scope', scope, 'payload', payload, 'vector', vec, 'expires', exp, 'docs', docs)
local ms = math.floor(tonumber(exp) * 1000)
redis.call('PEXPIREAT', ek, ms)
redis.call('ZADD', p .. 'lru', now, key)
redis.call('ZADD', p .. 'exp', exp, key)
for doc in string.gmatch(docs, '%S+') do
  redis.call('SADD', p .. 'd:' .. doc, key)
  redis.call('PEXPIREAT', p .. 'd:' .. doc, ms)
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('XADD', p .. 'log', 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'op', 'add', 'key', key,
           'scope', scope, 'vector', vec, 'expires', exp)
local ttl = 0
for _, k in ipairs(redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0, 64)) do
  drop(p, maxlen, k); ttl = ttl + 1
end
local lru = 0
local n = redis.call('ZCARD', p .. 'lru')
if n > maxn then
  for _, k in ipairs(redis.call('ZRANGE', p .. 'lru', 0, n - maxn - 1)) do drop(p, maxlen, k); lru = lru + 1 end
end
return {ttl, lru, redis.call('ZCARD', p .. 'lru')}
"""
)
_DELETE_DOCS = (
    _DROP
    + """
local p, maxlen, n = ARGV[1], ARGV[2], 0
epoch(p, ARGV[3])
for i = 4, #ARGV do
  local dk = p .. 'd:' .. ARGV[i]
  for _, k in ipairs(redis.call('SMEMBERS', dk)) do n = n + drop(p, maxlen, k) end
  redis.call('DEL', dk)
end
return n
"""
)
_CLEAR = (
    _DROP
    + """
local p, maxlen, n = ARGV[1], ARGV[2], 0
epoch(p, ARGV[3])
for _, k in ipairs(redis.call('ZRANGE', p .. 'lru', 0, -1)) do n = n + redis.call('DEL', p .. 'e:' .. k) end
redis.call('DEL', p .. 'lru', p .. 'exp')
local seq = redis.call('INCR', p .. 'seq')
redis.call('XADD', p .. 'log', 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'op', 'clear')
return n
"""
)


def _new_epoch() -> str:
    """A fresh random epoch candidate (each write passes one; only the first after a start is kept)."""
    return uuid.uuid4().hex


def _stream_id(raw: bytes) -> tuple[int, int]:
    """A Redis stream id ``b"<ms>-<n>"`` as a comparable pair."""
    ms, _, n = raw.partition(b"-")
    return int(ms), int(n or 0)


class RedisCacheBackend:
    """Implements :class:`~sovereign.cache.backends.base.CacheBackend` on one Redis database.

    Args:
        url: ``redis://host:port/db``.
        max_entries: LRU limit (global, across processes).
        timeout_s: socket timeout per command; no retries (a slow Redis is a miss, not a wait).
        prefix: key prefix, so several caches can share a database.
        stream_len: events kept in the sync stream (approximate); a process further behind resyncs.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_entries: int,
        dimensions: int = 384,
        timeout_s: float = 0.05,
        prefix: str = "sov:cache:",
        stream_len: int = 50_000,
    ) -> None:
        self.url = url
        self.where = url.split("@")[-1]  # no credentials in messages
        self.max_entries = max_entries
        self.prefix = prefix
        self.stream_len = stream_len
        self.index = VectorIndex(dimensions)
        self._dimensions = dimensions
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self._put = self._client.register_script(_PUT)
        self._delete_docs = self._client.register_script(_DELETE_DOCS)
        self._clear = self._client.register_script(_CLEAR)
        self._seq = 0
        self._last_id: bytes = b"0-0"
        self._epoch: bytes | None = None  # the Redis epoch the local index belongs to
        self._synced = False
        self._resync: asyncio.Task[None] | None = None

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StorageError(f"Redis cache at {self.where} failed: {type(exc).__name__}: {exc}") from exc

    # -- index synchronisation ------------------------------------------------------------------
    async def open(self) -> None:
        await self._full_resync()

    async def close(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.gather(self._resync, return_exceptions=True)
        await self._client.aclose()
        self.index.clear()

    async def _full_resync(self) -> None:
        """Rebuild the local index from Redis (SCAN), then follow the stream from that point."""

        async def load() -> tuple[int, bytes, bytes, VectorIndex]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._k("epoch"), _new_epoch(), nx=True)
                pipe.get(self._k("epoch"))
                pipe.get(self._k("seq"))
                pipe.xrevrange(self._k("log"), count=1)
                _, epoch, seq, last = await pipe.execute()
            index = VectorIndex(self._dimensions)
            now = time.time()
            batch: list[bytes] = []
            async for name in self._client.scan_iter(match=self._k("e:*"), count=1000):
                batch.append(name)
                if len(batch) >= 1000:
                    await self._load(batch, index, now)
                    batch = []
            await self._load(batch, index, now)
            return int(seq or 0), (last[0][0] if last else b"0-0"), epoch, index

        self._seq, self._last_id, self._epoch, self.index = await self._call(load())
        self._synced = True

    async def _load(self, names: list[bytes], index: VectorIndex, now: float) -> None:
        if not names:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(name, "scope", "vector", "expires")
            rows = await pipe.execute()
        start = len(self._k("e:"))
        for name, (scope, vector, expires) in zip(names, rows, strict=True):
            if vector and expires and float(expires) > now:
                index.add(scope.decode(), name[start:].decode(), np.frombuffer(vector, dtype="<f4"), float(expires))

    def _start_resync(self) -> None:
        self._synced = False
        if self._resync is None or self._resync.done():
            self._resync = asyncio.create_task(self._background_resync())

    async def _background_resync(self) -> None:
        try:
            await self._full_resync()
        except StorageError as exc:
            metrics.CACHE_ERRORS.labels(backend=self.name).inc()
            log.warning("cache index resync failed (semantic layer stays off until the next try): %s", exc)

    def _tail(self, pipe: Any, count: int) -> None:
        """Queue the reads :meth:`_apply` needs: the epoch and the stream after ``_last_id``."""
        pipe.get(self._k("epoch"))
        pipe.xread({self._k("log"): self._last_id}, count=count)

    def _apply(self, epoch: bytes | None, reply: Any) -> None:
        """Apply ``XREAD`` events to the local index (idempotent).

        Args:
            epoch: the Redis epoch, read in the same round trip as ``reply``.
            reply: the ``XREAD`` answer (events after ``_last_id``).

        A different epoch (Redis restarted), or an event that is new but not the next in sequence
        (a gap: the stream was trimmed; or a restart from an older snapshot), starts a background
        resync; the events are not applied.
        """
        if epoch != self._epoch:
            self._start_resync()
            return
        for _stream, events in reply or []:
            for event_id, fields in events:
                seq = int(fields[b"seq"])
                if _stream_id(event_id) <= _stream_id(self._last_id):
                    continue  # already applied (two reads of the same tail overlapped)
                if seq != self._seq + 1:
                    self._start_resync()
                    return
                self._seq, self._last_id = seq, event_id
                op = fields[b"op"]
                if op == b"add" and fields.get(b"vector"):
                    self.index.add(
                        fields[b"scope"].decode(),
                        fields[b"key"].decode(),
                        np.frombuffer(fields[b"vector"], dtype="<f4"),
                        float(fields[b"expires"]),
                    )
                elif op == b"add" or op == b"del":
                    self.index.remove(fields[b"key"].decode())
                elif op == b"clear":
                    self.index.clear()

    # -- the CacheBackend protocol --------------------------------------------------------------
    async def get(self, key: str) -> CacheEntry | None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._k("e:" + key))
            pipe.zadd(self._k("lru"), {key: time.time()}, xx=True)
            self._tail(pipe, 1000)
            row, _, epoch, events = await self._call(pipe.execute())
        self._apply(epoch, events)
        if not self._synced:
            self._start_resync()
        return self._entry(key, row)

    def _entry(self, key: str, row: dict[bytes, bytes]) -> CacheEntry | None:
        if not row or float(row[b"expires"]) <= time.time():
            return None
        return CacheEntry.from_payload(key, row[b"scope"].decode(), row[b"payload"], row.get(b"vector"))

    async def nearest(
        self, scope: str, vector: np.ndarray, k: int = 4, min_score: float = -1.0
    ) -> list[tuple[CacheEntry, float]]:
        if not self._synced:
            return []
        found = self.index.search(scope, vector, k=k, now=time.time(), min_score=min_score)
        if not found:  # the usual miss: nothing close enough, no round trip to storage
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for key, _ in found:
                pipe.hgetall(self._k("e:" + key))
            rows = await self._call(pipe.execute())
        out = []
        for (key, score), row in zip(found, rows, strict=True):
            entry = self._entry(key, row)
            if entry is None:
                self.index.remove(key)
            else:
                out.append((entry, score))
        return out

    async def touch(self, key: str) -> None:
        await self._call(self._client.zadd(self._k("lru"), {key: time.time()}, xx=True))

    async def put(self, entry: CacheEntry) -> None:
        await self.put_many([entry])

    async def put_many(self, entries: list[CacheEntry]) -> None:
        """Insert or replace entries (one Lua call each, pipelined in batches of 500)."""
        for start in range(0, len(entries), 500):
            async with self._client.pipeline(transaction=False) as pipe:
                for e in entries[start : start + 500]:
                    await self._put(
                        args=[
                            self.prefix,
                            time.time(),
                            self.max_entries,
                            self.stream_len,
                            e.key,
                            e.scope,
                            e.payload(),
                            vector_bytes(e.vector) or b"",
                            e.expires,
                            " ".join(e.doc_ids),
                            _new_epoch(),
                        ],
                        client=pipe,
                    )
                results = await self._call(pipe.execute())
            for ttl, lru, total in results:
                if ttl:
                    metrics.CACHE_EVICTIONS.labels(reason="ttl").inc(ttl)
                if lru:
                    metrics.CACHE_EVICTIONS.labels(reason="lru").inc(lru)
                metrics.CACHE_ENTRIES.labels(backend=self.name).set(total)
        await self._sync()

    async def _sync(self) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            self._tail(pipe, 100_000)
            epoch, events = await self._call(pipe.execute())
        self._apply(epoch, events)

    async def delete_documents(self, doc_ids: Iterable[str]) -> int:
        ids = sorted(set(doc_ids))
        if not ids:
            return 0
        n = int(await self._call(self._delete_docs(args=[self.prefix, self.stream_len, _new_epoch(), *ids])))
        if n:
            metrics.CACHE_EVICTIONS.labels(reason="invalidated").inc(n)
        await self._sync()
        return n

    async def clear(self) -> int:
        n = int(await self._call(self._clear(args=[self.prefix, self.stream_len, _new_epoch()])))
        names = await self._call(self._scan("d:*"))
        if names:
            await self._call(self._client.delete(*names))
        await self._sync()
        metrics.CACHE_ENTRIES.labels(backend=self.name).set(0)
        return n

    async def _scan(self, pattern: str) -> list[bytes]:
        return [name async for name in self._client.scan_iter(match=self._k(pattern), count=1000)]

    async def count(self) -> int:
        return int(await self._call(self._client.zcard(self._k("lru"))))

    async def stats(self) -> dict[str, Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zcard(self._k("lru"))
            pipe.zcount(self._k("exp"), time.time(), "+inf")
            pipe.xlen(self._k("log"))
            pipe.info("memory")
            entries, live, log_len, memory = await self._call(pipe.execute())
        return {
            "backend": self.name,
            "url": self.where,
            "entries": entries,
            "live": live,
            "stream_events": log_len,
            "indexed_vectors": len(self.index),
            "synced": self._synced,
            "redis_used_memory_bytes": memory.get("used_memory"),
            "max_entries": self.max_entries,
        }
