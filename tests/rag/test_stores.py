"""Both vector stores pass the shared contract; the embedded store's ANN index survives crashes and
keeps one index file per tenant's collection. (Cross-tenant isolation: tests/security/test_tenants.py.)"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sovereign.errors import ConfigError, StorageError
from sovereign.rag.models import ChunkRecord, DocumentRecord
from sovereign.rag.stores.base import tenant_tag
from sovereign.rag.stores.embedded import EmbeddedStore
from sovereign.rag.stores.pgvector import PgVectorStore, glob_to_like
from sovereign.testing.vector_store_contract import VectorStoreContract, make_doc

pytestmark = pytest.mark.anyio


class TestEmbeddedStore(VectorStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
        s = EmbeddedStore(tmp_path / "rag")
        await s.open()
        yield s
        await s.close()


class TestPgVectorStore(VectorStoreContract):
    @pytest.fixture
    async def store(self, pg_uri: str) -> AsyncIterator[PgVectorStore]:
        s = PgVectorStore(pg_uri, schema=f"t_{uuid.uuid4().hex[:12]}", pool_max=2)
        await s.open()
        yield s
        await s.close()


class TestPgVectorHalfvec(VectorStoreContract):
    @pytest.fixture
    async def store(self, pg_uri: str) -> AsyncIterator[PgVectorStore]:
        s = PgVectorStore(pg_uri, schema=f"h_{uuid.uuid4().hex[:12]}", halfvec=True, pool_max=2)
        await s.open()
        yield s
        await s.close()


async def test_ann_index_catches_up_after_crash(tmp_path: Path) -> None:
    """Rows committed to SQLite but never saved to the ANN file (a crash) are indexed on next open;
    an ANN file holding rows SQLite no longer has (ghosts) is cleaned; a garbage file is rebuilt."""
    store = EmbeddedStore(tmp_path)
    await store.open()
    first = make_doc("alpha", "/a.md", ["one", "two"], 1)
    await store.upsert_documents([first])
    await store.close()  # index file saved with 2 keys
    # simulate a crash after commit: write a second document with SQLite only (no index update)
    db = sqlite3.connect(tmp_path / "store.sqlite3")
    second = make_doc("alpha", "/b.md", ["three"], 2)
    db.execute("INSERT INTO documents (doc_id, tenant, collection, path, title, content_hash, size, metadata) "
               "VALUES (?, 'anonymous', 'alpha', '/b.md', 'T', 'x', 1, '{}')", (second[0].doc_id,))
    db.execute("INSERT INTO chunks (chunk_id, doc_id, tenant, collection, ordinal, heading, text, content_hash, "
               "token_count, vector) VALUES (?, ?, 'anonymous', 'alpha', 0, '', 'three', 'h3', 1, ?)",
               (second[1][0].chunk_id, second[0].doc_id, second[2][0].tobytes()))
    db.execute("DELETE FROM chunks WHERE chunk_id = ?", (first[1][1].chunk_id,))  # a ghost in the index
    db.commit()
    db.close()
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        ranked = await store.vector_search(second[2][0], 5, collection="alpha")
        assert next(cid for cid, _ in ranked) == second[1][0].chunk_id
        assert first[1][1].chunk_id not in {cid for cid, _ in ranked}
        assert len(store._ann.indexes["alpha"]) == 2
    finally:
        await store.close()
    (tmp_path / "ann" / "alpha.usearch").write_bytes(b"not an index")  # bad input: a corrupt index file
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        assert len(store._ann.indexes["alpha"]) == 2
        assert (await store.vector_search(first[2][0], 1))[0][0] == first[1][0].chunk_id
    finally:
        await store.close()


async def test_embedded_store_rejects_use_before_open(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    with pytest.raises(Exception, match="not open"):
        await store.collections()


def test_pgvector_rejects_bad_schema_name() -> None:
    with pytest.raises(ConfigError):
        PgVectorStore("postgresql:///x", schema="x; DROP TABLE y")


def test_glob_to_like_escapes_sql_wildcards() -> None:
    assert glob_to_like("/docs/*_1%.html?") == "/docs/%\\_1\\%.html_"


async def test_vector_search_on_empty_store_is_empty(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        assert await store.vector_search(np.ones(384, dtype=np.float32), 3) == []
    finally:
        await store.close()


@pytest.fixture
def fresh_db(pg_uri: str) -> Iterator[str]:
    """A new database made from template1, so it has no ``vector`` extension; dropped afterwards."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(pg_uri, dbname=name)
    finally:
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _has_vector(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None


async def test_pgvector_open_creates_the_extension_in_a_fresh_database(fresh_db: str) -> None:
    assert not _has_vector(fresh_db)
    store = PgVectorStore(fresh_db, schema="fresh", pool_max=2)
    await store.open()
    try:
        doc = make_doc("alpha", "/a.md", ["one"], 1)
        await store.upsert_documents([doc])
        assert (await store.vector_search(doc[2][0], 1, collection="alpha"))[0][0] == doc[1][0].chunk_id
    finally:
        await store.close()
    assert _has_vector(fresh_db)
    again = PgVectorStore(fresh_db, schema="fresh", pool_max=2)  # already there: open is idempotent
    await again.open()
    await again.close()


async def test_pgvector_open_without_privilege_for_the_extension_is_a_clear_error(fresh_db: str) -> None:
    """Bad input: a role that is not a superuser cannot create pgvector (not a trusted extension)."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    role = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        store = PgVectorStore(make_conninfo(fresh_db, user=role, password=""), schema="fresh", pool_max=2)
        with pytest.raises(StorageError, match="CREATE EXTENSION vector") as info:
            await store.open()
        assert "superuser" in info.value.message and store._pool is None
        assert not _has_vector(fresh_db)  # nothing was created
    finally:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


async def test_a_second_process_writes_are_seen_by_the_next_vector_search(tmp_path: Path) -> None:
    """Two stores on one directory (a running server, a CLI ingest): the server's ANN index catches up
    with documents the other wrote, replaced or deleted, even after the server wrote in between."""
    server, cli = EmbeddedStore(tmp_path), EmbeddedStore(tmp_path)
    await server.open()
    await cli.open()
    try:
        first = make_doc("alpha", "/a.md", ["one", "two"], 1)
        await server.upsert_documents([first])
        assert len(server._ann.indexes["alpha"]) == 2
        versions_synced = dict(server._ann.versions)

        second = make_doc("alpha", "/b.md", ["three"], 2)
        other = make_doc("beta", "/c.md", ["four"], 3)  # a collection the server has never seen
        await cli.upsert_documents([second, other])
        await server.upsert_documents([make_doc("alpha", "/d.md", ["five"], 4)])  # the server writes too
        assert server._ann.versions["alpha"] == versions_synced["alpha"]  # still behind: the cli wrote first
        ranked = await server.vector_search(second[2][0], 1, collection="alpha")
        assert ranked[0][0] == second[1][0].chunk_id
        assert (await server.vector_search(other[2][0], 1))[0][0] == other[1][0].chunk_id  # all collections
        assert len(server._ann.indexes["alpha"]) == 4 and len(server._ann.indexes["beta"]) == 1

        replaced = make_doc("alpha", "/b.md", ["three, rewritten"], 5)  # same path: replaces its chunks
        await cli.upsert_documents([replaced])
        await cli.delete_documents([first[0].doc_id])
        assert (await server.vector_search(replaced[2][0], 1, collection="alpha"))[0][0] == replaced[1][0].chunk_id
        assert len(server._ann.indexes["alpha"]) == 2  # old and deleted rows left the index too
        assert server._ann.versions["alpha"] == await cli.index_version("alpha")

        version = server._ann.versions["alpha"]  # its own writes keep it in sync without a full catch-up
        await server.upsert_documents([make_doc("alpha", "/e.md", ["six"], 6)])
        assert server._ann.versions["alpha"] == version + 1
    finally:
        await cli.close()
        await server.close()


def tenant_copy(item: tuple[DocumentRecord, list[ChunkRecord], np.ndarray], tenant: str) -> tuple[
        DocumentRecord, list[ChunkRecord], np.ndarray]:
    """``item`` (a :func:`make_doc` triple) owned by ``tenant``, under ids of its own."""
    doc, chunks, vectors = item
    doc_id = f"{tenant}-{doc.doc_id}"
    return (replace(doc, doc_id=doc_id, tenant=tenant),
            [replace(c, chunk_id=f"{tenant}-{c.chunk_id}", doc_id=doc_id) for c in chunks], vectors)


async def test_each_tenants_collection_has_its_own_index_file_and_catch_up(tmp_path: Path) -> None:
    """Three tenants' collections of one name get three ANN files (the anonymous one keeps the bare
    name, others a hashed tag: bad input, a tenant id with '/' and spaces); a second process writing
    for one tenant is caught up by that tenant's next search, and the files reload after a restart."""
    odd = "team/a b"
    server, cli = EmbeddedStore(tmp_path), EmbeddedStore(tmp_path)
    await server.open()
    await cli.open()
    try:
        mine = make_doc("alpha", "/a.md", ["one"], 1)
        await server.upsert_documents([mine, tenant_copy(mine, "key-1")])
        theirs = tenant_copy(make_doc("alpha", "/b.md", ["two"], 2), odd)
        await cli.upsert_documents([theirs])  # another process, another tenant
        ranked = await server.vector_search(theirs[2][0], 5, tenant=odd)
        assert [cid for cid, _ in ranked] == [theirs[1][0].chunk_id]
        assert [cid for cid, _ in await server.vector_search(theirs[2][0], 5)] == [mine[1][0].chunk_id]
    finally:
        await cli.close()
        await server.close()
    files = sorted(f.name for f in (tmp_path / "ann").glob("*.usearch"))
    tags = [tenant_tag("key-1"), tenant_tag(odd)]
    assert files == sorted(["alpha.usearch", *(f"alpha@{tag}.usearch" for tag in tags)])
    again = EmbeddedStore(tmp_path)
    await again.open()
    try:
        assert {space: len(index) for space, index in again._ann.indexes.items()} == {
            "alpha": 1, f"alpha@{tenant_tag('key-1')}": 1, f"alpha@{tenant_tag(odd)}": 1}
        assert await again.collections(tenant=odd) == {"alpha": 1}
    finally:
        await again.close()


def test_query_terms_drop_stop_words_unless_nothing_else_is_left() -> None:
    from sovereign.rag.stores.base import query_terms

    assert query_terms("What does functools.lru_cache do with its maxsize argument?") == [
        "functools", "lru_cache", "maxsize", "argument"]
    assert query_terms("To be or not to be?") == ["to", "be", "or", "not"]
