"""Conversation store in PostgreSQL through psycopg 3 (async connection pool).

psycopg errors are translated into :class:`~sovereign.errors.StorageError` here, in :meth:`_run`.
The schema is versioned by :data:`MIGRATIONS` (store ``conversations``, recorded in the
``_sovereign_migrations`` table on the connection's ``search_path``): version 2 adds the owning
``tenant`` to each conversation (existing ones belong to ``anonymous``); every query filters on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from sovereign.conversations.store import ANONYMOUS, Conversation, StoredMessage, check_limit, unknown
from sovereign.errors import StorageError
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


@MIGRATIONS.step
async def m002_tenant(conn: psycopg.AsyncConnection[Any]) -> None:
    """Each conversation belongs to a tenant; existing ones to ``anonymous`` (a constant default
    rewrites no rows; it is dropped afterwards so every write names its tenant)."""
    for statement in (
        "ALTER TABLE sovereign_conversations ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'anonymous'",
        "ALTER TABLE sovereign_conversations ALTER COLUMN tenant DROP DEFAULT",
        "CREATE INDEX IF NOT EXISTS sovereign_conversations_tenant ON sovereign_conversations (tenant, created_at)",
    ):
        await conn.execute(statement)


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

    async def create(self, model: str, *, tenant: str = ANONYMOUS) -> Conversation:
        conv = Conversation(uuid.uuid4().hex, model, time.time(), tenant)

        async def insert(c: psycopg.AsyncConnection[Any]) -> None:
            await c.execute(
                "INSERT INTO sovereign_conversations (id, model, created_at, tenant) VALUES (%s, %s, %s, %s)",
                (conv.id, conv.model, conv.created_at, conv.tenant),
            )

        await self._run(insert)
        return conv

    async def get(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> Conversation:
        async def select(c: psycopg.AsyncConnection[Any]) -> Any:
            cur = await c.execute(
                "SELECT id, model, created_at, tenant FROM sovereign_conversations WHERE id = %s AND tenant = %s",
                (conversation_id, tenant),
            )
            return await cur.fetchone()

        row = await self._run(select)
        if row is None:
            raise unknown(conversation_id)
        return Conversation(*row)

    async def append(
        self, conversation_id: str, role: Role, content: str, deployment: str | None = None, *,
        tenant: str = ANONYMOUS,
    ) -> StoredMessage:
        now = time.time()

        async def insert(c: psycopg.AsyncConnection[Any]) -> int | None:
            async with c.transaction():
                cur = await c.execute("SELECT 1 FROM sovereign_conversations WHERE id = %s AND tenant = %s FOR UPDATE",
                                      (conversation_id, tenant))
                if await cur.fetchone() is None:
                    return None
                cur = await c.execute(
                    "INSERT INTO sovereign_conversation_messages SELECT %s, COALESCE(MAX(seq) + 1, 0), %s, %s, %s, %s "
                    "FROM sovereign_conversation_messages WHERE conversation_id = %s RETURNING seq",
                    (conversation_id, role, content, deployment, now, conversation_id),
                )
                (seq,) = await cur.fetchone()  # type: ignore[misc]
                return int(seq)

        seq = await self._run(insert)
        if seq is None:
            raise unknown(conversation_id)
        return StoredMessage(seq, role, content, deployment, now)

    async def messages(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> list[StoredMessage]:
        await self.get(conversation_id, tenant=tenant)

        async def select(c: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await c.execute(
                "SELECT seq, role, content, deployment, created_at FROM sovereign_conversation_messages "
                "WHERE conversation_id = %s ORDER BY seq",
                (conversation_id,),
            )
            return await cur.fetchall()

        return [StoredMessage(*row) for row in await self._run(select)]

    async def recent(self, *, tenant: str = ANONYMOUS, limit: int = 100) -> list[Conversation]:
        check_limit(limit)

        async def select(c: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await c.execute(
                "SELECT id, model, created_at, tenant FROM sovereign_conversations WHERE tenant = %s "
                "ORDER BY created_at DESC, id LIMIT %s", (tenant, limit),
            )
            return await cur.fetchall()

        return [Conversation(*row) for row in await self._run(select)]

    async def delete(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> None:
        async def remove(c: psycopg.AsyncConnection[Any]) -> int:
            cur = await c.execute("DELETE FROM sovereign_conversations WHERE id = %s AND tenant = %s",
                                  (conversation_id, tenant))
            return cur.rowcount

        if not await self._run(remove):
            raise unknown(conversation_id)

    async def close(self) -> None:
        await self._pool.close()
