"""Both vector stores pass the shared contract; the embedded store's ANN index survives crashes."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from sovereign.errors import ConfigError
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
    db.execute("INSERT INTO documents VALUES (?, 'alpha', '/b.md', 'T', 'x', 1, '{}')", (second[0].doc_id,))
    db.execute("INSERT INTO chunks (chunk_id, doc_id, collection, ordinal, heading, text, content_hash, token_count, "
               "vector) VALUES (?, ?, 'alpha', 0, '', 'three', 'h3', 1, ?)",
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
        assert len(store._indexes["alpha"]) == 2
    finally:
        await store.close()
    (tmp_path / "ann" / "alpha.usearch").write_bytes(b"not an index")  # bad input: a corrupt index file
    store = EmbeddedStore(tmp_path)
    await store.open()
    try:
        assert len(store._indexes["alpha"]) == 2
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
