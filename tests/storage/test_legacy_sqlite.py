"""The SQLite stores open databases written by the release before versioned migrations, fresh ones,
and refuse ones written by a newer Sovereign. The tenant migrations (conversations ``m002_tenant``,
rag_embedded ``m002_tenants``) give every legacy row to tenant ``anonymous``: it stays readable
without a tenant and is unknown to another tenant (bad input: tenant ``key-0`` asking for it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from sovereign.cache.backends.sqlite import SqliteCacheBackend
from sovereign.conversations.sqlite import SqliteConversationStore
from sovereign.errors import ConfigError, NotFoundError
from sovereign.rag.stores.embedded import EmbeddedStore

pytestmark = pytest.mark.anyio


def recorded(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT store, name FROM _sovereign_migrations ORDER BY store, name").fetchall()


async def open_cache(path: Path) -> SqliteCacheBackend:
    store = SqliteCacheBackend(path / "cache.sqlite3", max_entries=100, dimensions=4)
    await store.open()
    return store


async def open_conversations(path: Path) -> SqliteConversationStore:
    return await SqliteConversationStore.open(path / "conversations.sqlite3")


async def open_rag(path: Path) -> EmbeddedStore:
    store = EmbeddedStore(path / "rag", dimensions=8)
    await store.open()
    return store


Opener = Callable[[Path], Awaitable[Any]]
STORES: dict[str, tuple[Opener, str, list[str]]] = {  # store name -> (open, database file, migrations)
    "cache": (open_cache, "cache.sqlite3", ["m001_initial"]),
    "conversations": (open_conversations, "conversations.sqlite3", ["m001_initial", "m002_tenant"]),
    "rag_embedded": (open_rag, "rag/store.sqlite3", ["m001_initial", "m002_tenants"]),
}


async def test_legacy_cache_rows_are_readable_and_adopted(legacy_copy: Path, legacy: ModuleType) -> None:
    assert "_sovereign_migrations" not in sqlite3.connect(legacy_copy / "cache.sqlite3").execute(
        "SELECT group_concat(name) FROM sqlite_master").fetchone()[0]
    cache = await open_cache(legacy_copy)
    try:
        assert cache.schema_version == 1 and await cache.count() == 2
        first = await cache.get("k1")
        assert first is not None and first.text == "Bisect" and first.doc_ids == ["doc-a"]
        assert (await cache.get("k2")) is not None
        ((entry, score),) = await cache.nearest("scope1", np.array([1, 0, 0, 0], dtype=np.float32), k=1)
        assert entry.key == "k1" and score == pytest.approx(1.0)
        assert await cache.delete_documents(["doc-a"]) == 1  # provenance survived too
    finally:
        await cache.close()
    assert recorded(legacy_copy / "cache.sqlite3") == [("cache", "m001_initial")]


async def test_legacy_conversation_rows_are_readable(legacy_copy: Path, legacy: ModuleType) -> None:
    store = await open_conversations(legacy_copy)
    try:
        assert store.schema_version == 2
        conv = await store.get(legacy.CONVERSATION_ID)
        assert (conv.model, conv.created_at, conv.tenant) == ("local-smol", legacy.NOW, "anonymous")
        rows = await store.messages(legacy.CONVERSATION_ID)
        assert [(m.seq, m.role, m.content, m.deployment) for m in rows] == [
            (i, *m) for i, m in enumerate(legacy.MESSAGES)]
        assert (await store.append(legacy.CONVERSATION_ID, "user", "again")).seq == 2
        assert [c.id for c in await store.recent()] == [legacy.CONVERSATION_ID]
        assert await store.recent(tenant="key-0") == []
        with pytest.raises(NotFoundError):
            await store.messages(legacy.CONVERSATION_ID, tenant="key-0")
    finally:
        await store.close()


async def test_legacy_rag_rows_are_readable(legacy_copy: Path, legacy: ModuleType) -> None:
    store = await open_rag(legacy_copy)
    try:
        assert store.schema_version == 2
        assert await store.collections() == {"legacy": 2}
        assert await store.collections(tenant="key-0") == {}
        assert await store.keyword_search("bisect", 3, tenant="key-0") == []
        assert await store.vector_search(legacy.rag_vector("doc-b", 0), 1, tenant="key-0") == []
        with pytest.raises(NotFoundError):
            await store.get_document("doc-a", tenant="key-0")
        docs = await store.list_documents("legacy")
        assert [(d.doc_id, d.path, d.title, d.metadata, d.chunk_count) for d in docs] == [
            ("doc-a", "/a.md", "Alpha", {"kind": "md"}, 2), ("doc-b", "/b.md", "Beta", {"kind": "md"}, 1)]
        assert (await store.keyword_search("bisect", 3))[0][0] == "doc-a#0"
        assert (await store.vector_search(legacy.rag_vector("doc-b", 0), 1))[0][0] == "doc-b#0"
        hits = await store.fetch_hits(["doc-a#1"])
        assert hits["doc-a#1"].text == "alpha second chunk"
        (_, chunks, vectors), *_ = [item async for item in store.iter_documents("legacy")]
        assert [c.chunk_id for c in chunks] == ["doc-a#0", "doc-a#1"]
        assert np.array_equal(vectors[1], legacy.rag_vector("doc-a", 1))
        assert {d.tenant for d in docs} == {"anonymous"}
    finally:
        await store.close()
    assert (legacy_copy / "rag" / "ann" / "legacy.usearch").is_file()  # the legacy index file is kept


async def test_rag_tenant_migration_keeps_chunk_ids_and_the_autoincrement_mark(legacy_copy: Path) -> None:
    """The rebuilt chunks table keeps every row id (the FTS5 rowids and ANN keys) and never hands
    out an id a deleted chunk had: bad input, a legacy file whose highest chunk was deleted."""
    db = legacy_copy / "rag" / "store.sqlite3"
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT id, chunk_id FROM chunks ORDER BY id").fetchall()
        conn.execute("UPDATE sqlite_sequence SET seq = 99 WHERE name = 'chunks'")  # ids up to 99 were used once
    store = await open_rag(legacy_copy)
    await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, chunk_id FROM chunks ORDER BY id").fetchall() == before
        assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone() == (99,)
        assert conn.execute("SELECT count(*) FROM chunks_fts").fetchone() == (len(before),)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        fks = {row[2] for table in ("documents", "chunks") for row in conn.execute(f"PRAGMA foreign_key_list({table})")}
        assert fks == {"collections", "documents"}  # the renamed tables, not the *_v2 names


@pytest.mark.parametrize("name", sorted(STORES))
async def test_fresh_and_legacy_databases_get_the_same_version_and_reopen_as_a_no_op(
    name: str, legacy_copy: Path, tmp_path: Path
) -> None:
    opener, file, steps = STORES[name]
    for root in (legacy_copy, tmp_path / "fresh"):
        for _ in range(2):  # the second open applies nothing
            store = await opener(root)
            assert store.schema_version == len(steps)
            await store.close()
        with sqlite3.connect(root / file) as conn:
            rows = conn.execute("SELECT store, name, applied_at FROM _sovereign_migrations ORDER BY rowid").fetchall()
        assert [(s, n) for s, n, _ in rows] == [(name, step) for step in steps]


@pytest.mark.parametrize("name", sorted(STORES))
async def test_a_database_from_a_newer_sovereign_is_refused(name: str, legacy_copy: Path) -> None:
    opener, file, _ = STORES[name]
    await (await opener(legacy_copy)).close()
    with sqlite3.connect(legacy_copy / file) as conn:
        conn.execute("INSERT INTO _sovereign_migrations VALUES (?, 'm999_from_the_future', 0)", (name,))
    before = (legacy_copy / file).read_bytes()
    with pytest.raises(ConfigError) as info:
        await opener(legacy_copy)
    message = info.value.message
    assert name in message and "m999_from_the_future" in message and "written by a newer Sovereign" in message
    assert (legacy_copy / file).read_bytes() == before  # no data touched
