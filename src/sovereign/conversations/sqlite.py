"""Conversation store in SQLite (WAL journal, one connection used from a one-thread executor).

sqlite3 errors are translated into :class:`~sovereign.errors.StorageError` here, in :meth:`_run`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sovereign.conversations.store import Conversation, StoredMessage
from sovereign.errors import NotFoundError, StorageError
from sovereign.types import Role

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, deployment TEXT,
    created_at REAL NOT NULL, PRIMARY KEY (conversation_id, seq));
"""


class SqliteConversationStore:
    """:class:`~sovereign.conversations.store.ConversationStore` on one SQLite file (WAL)."""

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> SqliteConversationStore:
        """Create the file and tables if needed. Raises StorageError."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conversations")

        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            return conn

        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except (sqlite3.Error, OSError) as exc:
            executor.shutdown(wait=False)
            raise StorageError(f"Cannot open the conversation store {path}: {exc}") from exc
        return cls(conn, executor)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)
        except sqlite3.Error as exc:
            raise StorageError(f"Conversation store failed: {exc}") from exc

    async def create(self, model: str) -> Conversation:
        conv = Conversation(uuid.uuid4().hex, model, time.time())
        await self._run(
            lambda c: c.execute("INSERT INTO conversations VALUES (?, ?, ?)", (conv.id, conv.model, conv.created_at))
        )
        return conv

    async def get(self, conversation_id: str) -> Conversation:
        row = await self._run(
            lambda c: c.execute(
                "SELECT id, model, created_at FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFoundError(
                f"Conversation {conversation_id!r} does not exist; create one first.", param="conversation_id"
            )
        return Conversation(*row)

    async def append(
        self, conversation_id: str, role: Role, content: str, deployment: str | None = None
    ) -> StoredMessage:
        await self.get(conversation_id)
        now = time.time()

        def insert(c: sqlite3.Connection) -> int:
            c.execute("BEGIN IMMEDIATE")
            try:
                (seq,) = c.execute(
                    "SELECT COALESCE(MAX(seq) + 1, 0) FROM conversation_messages WHERE conversation_id = ?",
                    (conversation_id,),
                ).fetchone()
                c.execute(
                    "INSERT INTO conversation_messages VALUES (?, ?, ?, ?, ?, ?)",
                    (conversation_id, seq, role, content, deployment, now),
                )
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return int(seq)

        return StoredMessage(await self._run(insert), role, content, deployment, now)

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        await self.get(conversation_id)
        rows: list[Any] = await self._run(
            lambda c: c.execute(
                "SELECT seq, role, content, deployment, created_at FROM conversation_messages "
                "WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
        )
        return [StoredMessage(*row) for row in rows]

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
