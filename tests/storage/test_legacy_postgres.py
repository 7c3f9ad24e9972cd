"""The PostgreSQL stores adopt a database written by the release before versioned migrations
(``tests/fixtures/legacy/postgres.sql``), upgrade the pgvector schema to version 3 and the
conversations to version 2 (tenants: every legacy row belongs to ``anonymous``, and is unknown to
another tenant, the bad input tried), and refuse a database written by a newer Sovereign. Needs the
real PostgreSQL of the ``pg_uri`` fixture."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from sovereign.errors import ConfigError, NotFoundError

pytestmark = [pytest.mark.anyio, pytest.mark.integration]
LEGACY_SQL = Path(__file__).resolve().parent.parent / "fixtures" / "legacy" / "postgres.sql"


@pytest.fixture
def legacy_db(pg_uri: str) -> Iterator[str]:
    """A new database with ``vector`` enabled and ``postgres.sql`` loaded; dropped afterwards."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"legacy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = make_conninfo(pg_uri, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
            conn.execute(LEGACY_SQL.read_text())
        yield dsn
    finally:
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


async def test_legacy_conversations_are_adopted_and_readable(legacy_db: str, legacy: ModuleType) -> None:
    from sovereign.conversations.postgres import PostgresConversationStore

    for _ in range(2):  # the second open is a no-op
        store = await PostgresConversationStore.open(legacy_db, max_size=1)
        try:
            assert store.schema_version == 2
            conv = await store.get(legacy.CONVERSATION_ID)
            assert (conv.model, conv.tenant) == ("local-smol", "anonymous")
            rows = await store.messages(legacy.CONVERSATION_ID)
            assert [(m.role, m.content, m.deployment) for m in rows][:2] == legacy.MESSAGES
            assert await store.recent(tenant="key-0") == []
            with pytest.raises(NotFoundError):
                await store.get(legacy.CONVERSATION_ID, tenant="key-0")
        finally:
            await store.close()
    assert query(legacy_db, "SELECT store, name FROM _sovereign_migrations ORDER BY name") == [
        ("conversations", "m001_initial"), ("conversations", "m002_tenant")]


async def test_legacy_pgvector_schema_is_upgraded_to_version_3(legacy_db: str, legacy: ModuleType) -> None:
    from sovereign.rag.stores.pgvector import PgVectorStore

    indexes = "SELECT indexname FROM pg_indexes WHERE schemaname = 'legacy_rag' AND indexname = 'chunks_doc'"
    assert query(legacy_db, indexes) == []
    store = PgVectorStore(legacy_db, dimensions=8, schema=legacy.PG_SCHEMA, pool_max=2)
    await store.open()
    try:
        assert store.schema_version == 3
        assert await store.collections() == {"legacy": 2}
        assert await store.collections(tenant="key-0") == {}
        assert await store.keyword_search("bisect", 3, tenant="key-0") == []
        with pytest.raises(NotFoundError):
            await store.get_document("doc-a", tenant="key-0")
        docs = await store.list_documents("legacy")
        assert [(d.doc_id, d.metadata, d.chunk_count) for d in docs] == [
            ("doc-a", {"kind": "md"}, 2), ("doc-b", {"kind": "md"}, 1)]
        assert (await store.keyword_search("bisect", 3))[0][0] == "doc-a#0"
        assert (await store.vector_search(legacy.rag_vector("doc-b", 0), 1))[0][0] == "doc-b#0"
        (_, chunks, vectors), *_ = [item async for item in store.iter_documents("legacy")]
        assert [c.text for c in chunks] == ["alpha bisect insort", "alpha second chunk"]
        assert np.array_equal(vectors[1], legacy.rag_vector("doc-a", 1))
    finally:
        await store.close()
    assert query(legacy_db, indexes) == [("chunks_doc",)]
    assert query(legacy_db, "SELECT store, name FROM legacy_rag._sovereign_migrations ORDER BY name") == [
        ("rag_pgvector", "m001_initial"), ("rag_pgvector", "m002_chunks_doc_id_index"),
        ("rag_pgvector", "m003_tenants")]
    constraints = query(legacy_db, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                   "WHERE contype IN ('p', 'u', 'f') AND conrelid IN "
                                   "('legacy_rag.documents'::regclass, 'legacy_rag.collections'::regclass) "
                                   "ORDER BY conname")
    assert constraints == [
        ("collections_pkey", "PRIMARY KEY (tenant, name)"), ("documents_pkey", "PRIMARY KEY (doc_id)"),
        ("documents_tenant_collection_fkey",
         "FOREIGN KEY (tenant, collection) REFERENCES legacy_rag.collections(tenant, name)"),
        ("documents_tenant_collection_path_key", "UNIQUE (tenant, collection, path)")]
    assert query(legacy_db, "SELECT DISTINCT tenant FROM legacy_rag.chunks") == [("anonymous",)]


async def test_a_fresh_pgvector_schema_gets_the_same_version(legacy_db: str) -> None:
    from sovereign.rag.stores.pgvector import PgVectorStore

    for _ in range(2):
        store = PgVectorStore(legacy_db, dimensions=8, schema="fresh_rag", pool_max=2)
        await store.open()
        assert store.schema_version == 3
        await store.close()


async def test_postgres_databases_from_a_newer_sovereign_are_refused(legacy_db: str, legacy: ModuleType) -> None:
    import psycopg

    from sovereign.conversations.postgres import PostgresConversationStore
    from sovereign.rag.stores.pgvector import PgVectorStore

    await (await PostgresConversationStore.open(legacy_db, max_size=1)).close()
    rag = PgVectorStore(legacy_db, dimensions=8, schema=legacy.PG_SCHEMA, pool_max=2)
    await rag.open()
    await rag.close()
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("INSERT INTO _sovereign_migrations VALUES ('conversations', 'm999_future', 0)")
        conn.execute("INSERT INTO legacy_rag._sovereign_migrations VALUES ('rag_pgvector', 'm999_future', 0)")
    with pytest.raises(ConfigError) as info:
        await PostgresConversationStore.open(legacy_db, max_size=1)
    assert "conversations" in info.value.message and "m999_future" in info.value.message
    assert "written by a newer Sovereign" in info.value.message
    with pytest.raises(ConfigError, match=r"rag_pgvector.*m999_future.*written by a newer Sovereign"):
        await PgVectorStore(legacy_db, dimensions=8, schema=legacy.PG_SCHEMA, pool_max=2).open()
    assert query(legacy_db, "SELECT count(*) FROM sovereign_conversation_messages") == [(2,)]  # untouched
