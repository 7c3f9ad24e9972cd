"""One SQLite connection on one dedicated thread, with one set of PRAGMAs for every store.

Every SQLite store of Sovereign (the cache backend, the conversation store, the embedded RAG
store, the agents' checkpointer) owns one :class:`SqliteWorker`. The connection is made on the
worker's thread and only ever used there (``check_same_thread`` stays on, so a stray use from
another thread fails loudly); async callers hop to it with :meth:`SqliteWorker.run`.

PRAGMAs (:data:`PRAGMAS`), in this order, for everybody:

- ``busy_timeout=10000``: wait up to 10 s for another connection's lock instead of failing with
  ``database is locked``. Set first, so the ``journal_mode`` switch below waits too.
- ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers
  (https://sqlite.org/wal.html); persistent in the file.
- ``synchronous=NORMAL``: no fsync per commit in WAL mode; a commit survives a process crash, the
  last ones may be lost on power loss (https://sqlite.org/pragma.html#pragma_synchronous).
- ``foreign_keys=ON``: ``REFERENCES ... ON DELETE CASCADE`` clauses are enforced (SQLite's default
  is off, per connection).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from sovereign.errors import StorageError

T = TypeVar("T")
IsolationLevel = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] | None

PRAGMAS: tuple[str, ...] = (
    "busy_timeout=10000",
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
)
BUSY_TIMEOUT_S = 10.0  # the same wait, for ``sqlite3.connect(timeout=...)``


class SqliteWorker:
    """Owns one ``sqlite3.Connection`` to ``path`` on one thread (``ThreadPoolExecutor(max_workers=1)``).

    Args:
        path: the database file; its directory is created by :meth:`open`.
        label: how errors name the database, e.g. ``"the cache database /d/cache.sqlite3"``.
        thread_name: prefix of the worker thread's name.
        isolation_level: the ``sqlite3`` transaction mode of the connection: ``None`` (autocommit,
            the store issues ``BEGIN``/``COMMIT`` itself) or ``"DEFERRED"`` (implicit transactions
            before DML, committed with ``conn.commit()`` / ``with conn:``).

    Errors: ``sqlite3.Error`` (and ``OSError`` while opening) become
    :class:`~sovereign.errors.StorageError` naming ``label``; other exceptions pass through.
    """

    def __init__(
        self, path: Path, *, label: str, thread_name: str, isolation_level: IsolationLevel = None
    ) -> None:
        self.path = Path(path)
        self.label = label
        self.thread_name = thread_name
        self.isolation_level = isolation_level
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` (or :meth:`aopen`) and :meth:`close` (or :meth:`aclose`)."""
        return self._executor is not None

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; use it on the worker thread only (inside a function given to :meth:`run`).

        Raises:
            StorageError: the worker is not open.
        """
        if self._conn is None:
            raise StorageError(f"{self._title()} is not open.")
        return self._conn

    def _title(self) -> str:
        return self.label[:1].upper() + self.label[1:]

    def _connect(self) -> None:
        """On the worker thread: create the directory, connect, apply :data:`PRAGMAS`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=self.isolation_level)
        try:
            for pragma in PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _start(self) -> Future[None]:
        if self._executor is not None:
            raise StorageError(f"{self._title()} is already open.")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        return self._executor.submit(self._connect)

    def _failed_open(self, exc: BaseException) -> StorageError:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        return StorageError(f"Cannot open {self.label}: {exc}")

    def open(self) -> None:
        """Start the thread and connect on it, blocking the caller until connected.

        Raises:
            StorageError: the file or its directory cannot be created, opened or switched to WAL.
        """
        try:
            self._start().result()
        except (sqlite3.Error, OSError) as exc:
            raise self._failed_open(exc) from exc

    async def aopen(self) -> None:
        """:meth:`open` without blocking the event loop. Raises StorageError."""
        try:
            await asyncio.wrap_future(self._start())
        except (sqlite3.Error, OSError) as exc:
            raise self._failed_open(exc) from exc

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """On the worker thread: ``fn(conn, *args)`` with sqlite3 errors translated."""
        try:
            return fn(self.conn, *args)
        except sqlite3.Error as exc:
            raise StorageError(f"{self._title()} failed: {exc}") from exc

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(conn, *args)`` on the worker thread; the future raises what :meth:`run` would.

        Raises:
            StorageError: the worker is not open.
        """
        if self._executor is None:
            raise StorageError(f"{self._title()} is not open.")
        return self._executor.submit(self._call, fn, args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` run on the worker thread, after everything queued before it.

        Raises:
            StorageError: the worker is not open, or ``fn`` raised ``sqlite3.Error``; anything
                else ``fn`` raises propagates unchanged.
        """
        return await asyncio.wrap_future(self.submit(fn, *args))

    @staticmethod
    def _close_conn(worker: SqliteWorker) -> None:
        conn, worker._conn = worker._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close the connection on its thread (after queued work) and stop the thread; idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            executor.submit(self._close_conn, self).result()
        finally:
            executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop; idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.wrap_future(executor.submit(self._close_conn, self))
        finally:
            executor.shutdown(wait=False)
