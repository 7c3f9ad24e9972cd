"""Embedded cache backend: SQLite (WAL) for entries + the in-process per-scope vector index.

One file ``<data_dir>/cache.sqlite3``. Writes run on one dedicated writer thread (a
:class:`~sovereign.storage.SqliteWorker`: its connection is never shared; its schema is versioned
by :data:`MIGRATIONS`). Lookups read inline on the event-loop thread through a second, read-only
connection: a primary-key read of a page-cached row takes tens of microseconds, less than a hop
to a thread and back, and a WAL reader never waits for the writer (https://sqlite.org/wal.html,
"readers do not block writers and a writer does not block readers"). The recency update of a hit
is queued to the writer without making the lookup wait. The vector index lives on the event-loop
thread and is rebuilt from the table at :meth:`open`. One gateway process per file: several
processes on one file would each keep their own index (use the ``redis`` backend to share a cache).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sovereign.cache.entry import CacheEntry, vector_bytes
from sovereign.cache.semantic import VectorIndex
from sovereign.errors import StorageError
from sovereign.observability import metrics
from sovereign.storage import Migrations, SqliteWorker, execute_script

T = TypeVar("T")
log = logging.getLogger("sovereign.cache")
SWEEP_EVERY = 256  # puts between TTL sweeps

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, scope TEXT NOT NULL, payload BLOB NOT NULL, vector BLOB,
    expires REAL NOT NULL, used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires);
CREATE TABLE IF NOT EXISTS provenance (
    doc_id TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (doc_id, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS provenance_key ON provenance(key);
"""
MIGRATIONS: Migrations[Callable[[sqlite3.Connection], None]] = Migrations("cache")


@MIGRATIONS.step
def m001_initial(db: sqlite3.Connection) -> None:
    """The schema of the release before versioned migrations (adopted as is)."""
    execute_script(db, _SCHEMA)


def _log_failure(future: Future[None]) -> None:
    """Done-callback of a queued write: count and log its failure (nobody awaits it)."""
    exc = future.exception()
    if exc is not None:
        metrics.CACHE_ERRORS.labels(backend="sqlite").inc()
        log.warning("cache recency update failed: %s", exc)


class SqliteCacheBackend:
    """Implements :class:`~sovereign.cache.backends.base.CacheBackend` on one SQLite file.

    Args:
        path: database file (created with its directory).
        max_entries: LRU limit; ``dimensions``: query vector length (384 for MiniLM).
    """

    name = "sqlite"

    def __init__(self, path: Path, *, max_entries: int, dimensions: int = 384) -> None:
        self.path = path
        self.max_entries = max_entries
        self.index = VectorIndex(dimensions)
        # DEFERRED: implicit transactions, committed by `with db:` in _write
        self._worker = SqliteWorker(path, label=f"the cache database {path}", thread_name="cache-sqlite",
                                    isolation_level="DEFERRED")
        self.schema_version = 0  # set by open(): the number of applied MIGRATIONS
        self._reader: sqlite3.Connection | None = None
        self._count = 0
        self._puts = 0

    @staticmethod
    def _write(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction on the writer connection (writer thread only)."""
        with db:
            return fn(db)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(db)`` in one transaction on the writer thread. Raises StorageError."""
        return await self._worker.run(self._write, fn)

    async def open(self) -> None:
        """Open (and migrate) the file, open the reader, rebuild the vector index from live rows.

        Raises:
            StorageError: the file cannot be opened or read. ConfigError: written by a newer Sovereign.
        """
        await self._worker.aopen()
        try:
            await self._load()
        except BaseException:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            await self._worker.aclose()
            raise

    async def _load(self) -> None:
        """Migrate, open the read-only connection, index the live vectors, count the rows."""
        self.schema_version = await self._worker.run(MIGRATIONS.apply)
        rows = await self._run(lambda db: db.execute(
            "SELECT key, scope, vector, expires FROM entries WHERE vector IS NOT NULL AND expires > ?",
            (time.time(),),
        ).fetchall())
        try:
            # timeout 0: a busy database (WAL-index recovery) fails at once, as a miss, instead of
            # sleeping on the event loop
            self._reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=0)
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot open the cache database {self.path} for reading: {exc}") from exc
        for key, scope, vector, expires in rows:
            self.index.add(scope, key, np.frombuffer(vector, dtype="<f4"), expires)
        self._count = await self._run(lambda db: db.execute("SELECT count(*) FROM entries").fetchone()[0])
        metrics.CACHE_ENTRIES.labels(backend=self.name).set(self._count)

    async def close(self) -> None:
        """Close the reader, then the writer after its queued writes; forget the vector index."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        await self._worker.aclose()
        self.index.clear()

    def _read(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """Rows of one read on the loop thread's read-only connection. Raises StorageError."""
        if self._reader is None:
            raise StorageError("The cache database is closed.")
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"Cache database {self.path} failed: {exc}") from exc

    def _touch_later(self, key: str, now: float) -> None:
        """Queue the LRU recency update of ``key`` on the writer thread; failures are logged."""
        self._worker.submit(self._write, lambda db: self._touch(db, key, now)).add_done_callback(_log_failure)

    @staticmethod
    def _touch(db: sqlite3.Connection, key: str, now: float) -> None:
        db.execute("UPDATE entries SET used = ? WHERE key = ?", (now, key))

    async def get(self, key: str) -> CacheEntry | None:
        now = time.time()
        rows = self._read("SELECT scope, payload, vector, expires FROM entries WHERE key = ?", (key,))
        if not rows:
            return None
        scope, payload, vector, expires = rows[0]
        if expires <= now:
            if await self._run(lambda db: self._delete_expired(db, key, now)):
                self._forget([key], "ttl")
            return None
        self._touch_later(key, now)
        return CacheEntry.from_payload(key, scope, payload, vector)

    @classmethod
    def _delete_expired(cls, db: sqlite3.Connection, key: str, now: float) -> bool:
        """Delete ``key`` if it is still expired (a concurrent get or put may have got there first)."""
        if db.execute("DELETE FROM entries WHERE key = ? AND expires <= ?", (key, now)).rowcount == 0:
            return False
        cls._delete(db, [key])  # its provenance
        return True

    async def nearest(
        self, scope: str, vector: np.ndarray, k: int = 4, min_score: float = -1.0
    ) -> list[tuple[CacheEntry, float]]:
        found = self.index.search(scope, vector, k=k, now=time.time(), min_score=min_score)
        if not found:  # the usual miss: nothing close enough, no round trip to storage
            return []
        keys = [key for key, _ in found]
        marks = ",".join("?" * len(keys))
        rows = {
            r[0]: (r[1], r[2], r[3])
            for r in self._read(f"SELECT key, scope, payload, vector FROM entries WHERE key IN ({marks})", keys)
        }
        out = []
        for key, score in found:
            if key in rows:
                out.append((CacheEntry.from_payload(key, *rows[key]), score))
            else:
                self.index.remove(key)  # deleted by another path since indexing
        return out

    async def touch(self, key: str) -> None:
        now = time.time()
        await self._run(lambda db: self._touch(db, key, now))

    async def put(self, entry: CacheEntry) -> None:
        await self.put_many([entry])

    async def put_many(self, entries: list[CacheEntry]) -> None:
        """Insert or replace several entries in one transaction (bulk loads, benchmarks)."""
        now = time.time()
        self._puts += len(entries)
        sweep = self._puts >= SWEEP_EVERY

        def write(db: sqlite3.Connection) -> tuple[int, list[str], list[str]]:
            keys = [e.key for e in entries]
            existing = self._existing(db, keys)
            db.executemany(
                "INSERT OR REPLACE INTO entries (key, scope, payload, vector, expires, used) VALUES (?,?,?,?,?,?)",
                [(e.key, e.scope, e.payload(), vector_bytes(e.vector), e.expires, now) for e in entries],
            )
            db.executemany("DELETE FROM provenance WHERE key = ?", [(k,) for k in keys])
            db.executemany(
                "INSERT OR IGNORE INTO provenance (doc_id, key) VALUES (?, ?)",
                [(d, e.key) for e in entries for d in e.doc_ids],
            )
            added = len(set(keys)) - existing
            expired: list[str] = []
            if sweep:
                expired = [r[0] for r in db.execute("SELECT key FROM entries WHERE expires <= ?", (now,))]
                self._delete(db, expired)
            total = self._count + added - len(expired)
            lru: list[str] = []
            if total > self.max_entries:
                lru = [
                    r[0]
                    for r in db.execute("SELECT key FROM entries ORDER BY used LIMIT ?", (total - self.max_entries,))
                ]
                self._delete(db, lru)
            return added, expired, lru

        added, expired, lru = await self._run(write)
        if sweep:
            self._puts = 0
        self._count += added
        for entry in entries:
            if entry.vector is not None:
                self.index.add(entry.scope, entry.key, entry.vector, entry.expires)
            else:
                self.index.remove(entry.key)
        self._forget(expired, "ttl")
        self._forget(lru, "lru")
        metrics.CACHE_ENTRIES.labels(backend=self.name).set(self._count)

    @staticmethod
    def _existing(db: sqlite3.Connection, keys: list[str]) -> int:
        found = 0
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            found += db.execute(f"SELECT count(*) FROM entries WHERE key IN ({marks})", part).fetchone()[0]
        return found

    @staticmethod
    def _delete(db: sqlite3.Connection, keys: list[str]) -> None:
        db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in keys])
        db.executemany("DELETE FROM provenance WHERE key = ?", [(k,) for k in keys])

    def _forget(self, keys: list[str], reason: str) -> None:
        """Loop-thread bookkeeping after rows were deleted: index, count, metrics."""
        if not keys:
            return
        for key in keys:
            self.index.remove(key)
        self._count = max(0, self._count - len(keys))
        if reason != "clear":
            metrics.CACHE_EVICTIONS.labels(reason=reason).inc(len(keys))
        metrics.CACHE_ENTRIES.labels(backend=self.name).set(self._count)

    async def delete_documents(self, doc_ids: Iterable[str]) -> int:
        ids = sorted(set(doc_ids))

        def delete(db: sqlite3.Connection) -> list[str]:
            keys: set[str] = set()
            for doc_id in ids:
                keys.update(r[0] for r in db.execute("SELECT key FROM provenance WHERE doc_id = ?", (doc_id,)))
            self._delete(db, sorted(keys))
            return sorted(keys)

        keys = await self._run(delete)
        self._forget(keys, "invalidated")
        return len(keys)

    async def clear(self) -> int:
        def wipe(db: sqlite3.Connection) -> int:
            n = db.execute("SELECT count(*) FROM entries").fetchone()[0]
            db.execute("DELETE FROM entries")
            db.execute("DELETE FROM provenance")
            return int(n)

        n = await self._run(wipe)
        self.index.clear()
        self._count = 0
        metrics.CACHE_ENTRIES.labels(backend=self.name).set(0)
        return n

    async def count(self) -> int:
        return int(await self._run(lambda db: db.execute("SELECT count(*) FROM entries").fetchone()[0]))

    async def stats(self) -> dict[str, Any]:
        def read(db: sqlite3.Connection) -> dict[str, Any]:
            entries, live = db.execute(
                "SELECT count(*), coalesce(sum(expires > ?), 0) FROM entries", (time.time(),)
            ).fetchone()
            scopes = db.execute("SELECT count(DISTINCT scope) FROM entries").fetchone()[0]
            return {"entries": entries, "live": live, "scopes": scopes}

        out = await self._run(read)
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "backend": self.name,
            "path": str(self.path),
            "bytes": size,
            "indexed_vectors": len(self.index),
            "max_entries": self.max_entries,
            **out,
        }
