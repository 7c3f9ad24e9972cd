"""Conversation store in PostgreSQL through psycopg 3 (async connection pool).

psycopg errors are translated into :class:`~sovereign.errors.StorageError` here, in :meth:`_run`.
The schema is versioned by :data:`MIGRATIONS` (store ``conversations``, recorded in the
``_sovereign_migrations`` table on the connection's ``search_path``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sovereign.conversations.store import Conversation, StoredMessage
from sovereign.errors import NotFoundError, StorageError
from sovereign.storage import Migrations, PostgresStep
from sovereign.types import Role

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sovereign_conversations (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS sovereign_conversation_messages (
    conversation_id TEXT NOT NULL REFERENCES sovereign_conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, deployment TEXT,
    created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (conversation_id, seq));
"""
MIGRATIONS: Migrations[PostgresStep] = Migrations("conversations")


@MIGRATIONS.step
async def m001_initial(conn: psycopg.AsyncConnection[Any]) -> None:
    """The schema of the release before versioned migrations (adopted as is)."""
    await conn.execute(SCHEMA)


class PostgresConversationStore:
    """:class:`~sovereign.conversations.store.ConversationStore` on PostgreSQL (tables ``sovereign_conversation*``).

    Build it with :meth:`open`. ``schema_version`` is the number of applied :data:`MIGRATIONS`.
    """

    def __init__(self, pool: AsyncConnectionPool, schema_version: int = 0) -> None:
        self._pool = pool
        self.schema_version = schema_version

    @classmethod
    async def open(cls, dsn: str, max_size: int = 4) -> PostgresConversationStore:
        """Connect and migrate the tables.

        Raises:
            StorageError: PostgreSQL unreachable or a DDL statement failed.
            ConfigError: the database was written by a newer Sovereign.
        """
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=max_size, open=False)
        try:
            await pool.open(wait=True, timeout=10)
            async with pool.connection() as conn:
                version = await MIGRATIONS.apply_async(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            await pool.close()
            raise StorageError(f"Cannot open the PostgreSQL conversation store: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        return cls(pool, version)

    async def _run(self, fn: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        try:
            async with self._pool.connection() as conn:
                return await fn(conn)
        except psycopg.Error as exc:
            raise StorageError(f"Conversation store failed: {exc}") from exc

    async def create(self, model: str) -> Conversation:
        conv = Conversation(uuid.uuid4().hex, model, time.time())

        async def insert(c: psycopg.AsyncConnection[Any]) -> None:
            await c.execute(
                "INSERT INTO sovereign_conversations VALUES (%s, %s, %s)", (conv.id, conv.model, conv.created_at)
            )

        await self._run(insert)
        return conv

    async def get(self, conversation_id: str) -> Conversation:
        async def select(c: psycopg.AsyncConnection[Any]) -> Any:
            cur = await c.execute(
                "SELECT id, model, created_at FROM sovereign_conversations WHERE id = %s", (conversation_id,)
            )
            return await cur.fetchone()

        row = await self._run(select)
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

        async def insert(c: psycopg.AsyncConnection[Any]) -> int:
            async with c.transaction():
                await c.execute("SELECT 1 FROM sovereign_conversations WHERE id = %s FOR UPDATE", (conversation_id,))
                cur = await c.execute(
                    "INSERT INTO sovereign_conversation_messages SELECT %s, COALESCE(MAX(seq) + 1, 0), %s, %s, %s, %s "
                    "FROM sovereign_conversation_messages WHERE conversation_id = %s RETURNING seq",
                    (conversation_id, role, content, deployment, now, conversation_id),
                )
                (seq,) = await cur.fetchone()  # type: ignore[misc]
                return int(seq)

        return StoredMessage(await self._run(insert), role, content, deployment, now)

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        await self.get(conversation_id)

        async def select(c: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await c.execute(
                "SELECT seq, role, content, deployment, created_at FROM sovereign_conversation_messages "
                "WHERE conversation_id = %s ORDER BY seq",
                (conversation_id,),
            )
            return await cur.fetchall()

        return [StoredMessage(*row) for row in await self._run(select)]

    async def close(self) -> None:
        await self._pool.close()
