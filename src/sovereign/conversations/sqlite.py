"""Conversation store in SQLite (WAL journal, one connection on a :class:`~sovereign.storage.SqliteWorker`).

sqlite3 errors are translated into :class:`~sovereign.errors.StorageError` by the worker. The
schema is versioned by :data:`MIGRATIONS` (store ``conversations``): version 2 adds the owning
``tenant`` to each conversation (existing ones belong to ``anonymous``); every query filters on it.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sovereign.conversations.store import ANONYMOUS, Conversation, StoredMessage, check_limit, unknown
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


@MIGRATIONS.step
def m002_tenant(conn: sqlite3.Connection) -> None:
    """Each conversation belongs to a tenant; existing ones to ``anonymous`` (SQLite keeps the
    column's default; the code always writes the tenant). Indexed for listing a tenant's newest."""
    execute_script(conn, """
        ALTER TABLE conversations ADD COLUMN tenant TEXT NOT NULL DEFAULT 'anonymous';
        CREATE INDEX conversations_tenant ON conversations (tenant, created_at)
    """)


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

    async def create(self, model: str, *, tenant: str = ANONYMOUS) -> Conversation:
        conv = Conversation(uuid.uuid4().hex, model, time.time(), tenant)
        await self._run(
            lambda c: c.execute("INSERT INTO conversations (id, model, created_at, tenant) VALUES (?, ?, ?, ?)",
                                (conv.id, conv.model, conv.created_at, conv.tenant))
        )
        return conv

    async def get(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> Conversation:
        row = await self._run(
            lambda c: c.execute(
                "SELECT id, model, created_at, tenant FROM conversations WHERE id = ? AND tenant = ?",
                (conversation_id, tenant),
            ).fetchone()
        )
        if row is None:
            raise unknown(conversation_id)
        return Conversation(*row)

    async def append(
        self, conversation_id: str, role: Role, content: str, deployment: str | None = None, *,
        tenant: str = ANONYMOUS,
    ) -> StoredMessage:
        now = time.time()

        def insert(c: sqlite3.Connection) -> int | None:
            c.execute("BEGIN IMMEDIATE")
            try:
                if c.execute("SELECT 1 FROM conversations WHERE id = ? AND tenant = ?",
                             (conversation_id, tenant)).fetchone() is None:
                    c.execute("ROLLBACK")
                    return None
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

        seq = await self._run(insert)
        if seq is None:
            raise unknown(conversation_id)
        return StoredMessage(seq, role, content, deployment, now)

    async def messages(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> list[StoredMessage]:
        await self.get(conversation_id, tenant=tenant)
        rows: list[Any] = await self._run(
            lambda c: c.execute(
                "SELECT seq, role, content, deployment, created_at FROM conversation_messages "
                "WHERE conversation_id = ? ORDER BY seq",
                (conversation_id,),
            ).fetchall()
        )
        return [StoredMessage(*row) for row in rows]

    async def recent(self, *, tenant: str = ANONYMOUS, limit: int = 100) -> list[Conversation]:
        check_limit(limit)
        rows: list[Any] = await self._run(
            lambda c: c.execute(
                "SELECT id, model, created_at, tenant FROM conversations WHERE tenant = ? "
                "ORDER BY created_at DESC, id LIMIT ?", (tenant, limit),
            ).fetchall()
        )
        return [Conversation(*row) for row in rows]

    async def delete(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> None:
        deleted = await self._run(
            lambda c: c.execute("DELETE FROM conversations WHERE id = ? AND tenant = ?",
                                (conversation_id, tenant)).rowcount
        )
        if not deleted:
            raise unknown(conversation_id)

    async def close(self) -> None:
        """Close the connection and its thread."""
        await self._worker.aclose()
