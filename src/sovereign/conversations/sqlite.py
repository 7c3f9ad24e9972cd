"""Conversation store in SQLite (WAL journal, one connection on a :class:`~sovereign.storage.SqliteWorker`).

sqlite3 errors are translated into :class:`~sovereign.errors.StorageError` by the worker. The
schema is versioned by :data:`MIGRATIONS` (store ``conversations``).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sovereign.conversations.store import Conversation, StoredMessage
from sovereign.errors import NotFoundError
from sovereign.storage import Migrations, SqliteWorker, execute_script
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
MIGRATIONS: Migrations[Callable[[sqlite3.Connection], None]] = Migrations("conversations")


@MIGRATIONS.step
def m001_initial(conn: sqlite3.Connection) -> None:
    """The schema of the release before versioned migrations (adopted as is)."""
    execute_script(conn, SCHEMA)


class SqliteConversationStore:
    """:class:`~sovereign.conversations.store.ConversationStore` on one SQLite file (WAL).

    Build it with :meth:`open`. ``schema_version`` is the number of applied :data:`MIGRATIONS`.
    """

    def __init__(self, worker: SqliteWorker, schema_version: int) -> None:
        self._worker = worker
        self.schema_version = schema_version

    @classmethod
    async def open(cls, path: Path) -> SqliteConversationStore:
        """Create the file if needed and migrate it.

        Raises:
            StorageError: the file cannot be opened or written.
            ConfigError: the file was written by a newer Sovereign.
        """
        # autocommit: append() takes its own BEGIN IMMEDIATE
        worker = SqliteWorker(path, label=f"the conversation store {path}", thread_name="conversations")
        await worker.aopen()
        try:
            version = await worker.run(MIGRATIONS.apply)
        except BaseException:
            await worker.aclose()
            raise
        return cls(worker, version)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` on the store's thread. Raises StorageError."""
        return await self._worker.run(fn)

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
        """Close the connection and its thread."""
        await self._worker.aclose()
