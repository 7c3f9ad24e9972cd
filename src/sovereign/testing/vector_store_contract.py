"""The contract every :class:`~sovereign.rag.stores.base.VectorStore` passes (haystack-style mixin).

Use it by subclassing in a test module and providing an async ``store`` fixture that yields an
opened, empty store of 384 dimensions::

    class TestMyStore(VectorStoreContract):
        @pytest.fixture
        async def store(self):
            s = MyStore(...); await s.open(); yield s; await s.close()

Vectors here are seeded random unit vectors (the contract is about storage and search semantics,
not about the embedding model); texts carry distinctive words so full-text ranking is checkable.
Tests are async (the module using this class sets ``pytestmark = pytest.mark.anyio``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sovereign.errors import InvalidRequestError, NotFoundError, StorageError
from sovereign.rag.models import ChunkRecord, DocumentRecord
from sovereign.rag.stores.base import VectorStore

DIMS = 384


def unit_vectors(n: int, seed: int) -> np.ndarray:
    """``n`` seeded random float32 unit vectors of 384 dims."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIMS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_doc(collection: str, path: str, texts: list[str], seed: int, title: str = "Title",
             content_hash: str | None = None) -> tuple[DocumentRecord, list[ChunkRecord], np.ndarray]:
    """A document with one chunk per text and seeded vectors; chunk hashes are unique per (path, i, text)."""
    doc_id = f"{collection}-{hashlib.sha256(path.encode()).hexdigest()[:12]}"
    chunks = [ChunkRecord(f"{doc_id}:{i}", doc_id, i, f"Section {i}", text, f"h-{path}-{i}-{text}", len(text.split()))
              for i, text in enumerate(texts)]
    doc = DocumentRecord(doc_id, collection, path, title, content_hash or f"sha-{path}-{len(texts)}", 100,
                         {"kind": "text"}, len(chunks))
    return doc, chunks, unit_vectors(len(texts), seed)


class VectorStoreContract:
    """Shared behaviour tests; subclasses supply the ``store`` fixture."""

    async def test_upsert_then_read_back(self, store: VectorStore) -> None:
        doc, chunks, vectors = make_doc("alpha", "/docs/a.md", ["apples grow on trees", "pears are sweet"], 1)
        assert await store.index_version("alpha") == 0
        await store.upsert_documents([(doc, chunks, vectors)])
        assert await store.collections() == {"alpha": 1}
        assert await store.index_version("alpha") >= 1
        assert await store.known_documents("alpha") == {"/docs/a.md": (doc.doc_id, doc.content_hash)}
        got = await store.get_document(doc.doc_id)
        assert (got.path, got.title, got.chunk_count, got.metadata) == ("/docs/a.md", "Title", 2, {"kind": "text"})
        hits = await store.fetch_hits([chunks[1].chunk_id, "no-such-chunk"])
        assert list(hits) == [chunks[1].chunk_id]
        assert hits[chunks[1].chunk_id].text == "pears are sweet"
        assert hits[chunks[1].chunk_id].heading == "Section 1"
        stored = await store.vectors_for_hashes([chunks[0].content_hash, "unknown-hash"])
        assert list(stored) == [chunks[0].content_hash]
        np.testing.assert_allclose(stored[chunks[0].content_hash], vectors[0], atol=1e-3)

    async def test_keyword_search_ranks_and_filters(self, store: VectorStore) -> None:
        a = make_doc("alpha", "/docs/lib/cache.html", ["the lru cache keeps maxsize entries", "unrelated text"], 2)
        b = make_doc("alpha", "/docs/tut/intro.md", ["an introduction without the magic word"], 3)
        c = make_doc("beta", "/docs/lib/other.html", ["another lru cache page in beta"], 4)
        await store.upsert_documents([a, b, c])
        ranked = await store.keyword_search("LRU cache maxsize?", 10, collection="alpha")
        assert ranked[0][0] == a[1][0].chunk_id
        assert all(cid.startswith("alpha") for cid, _ in ranked)
        everywhere = {cid for cid, _ in await store.keyword_search("lru", 10)}
        assert {a[1][0].chunk_id, c[1][0].chunk_id} <= everywhere
        globbed = await store.keyword_search("lru cache", 10, path_glob="*/tut/*")
        assert globbed == []
        # bad input: operators and punctuation only -> no terms -> empty result, never a syntax error
        assert await store.keyword_search('"* OR NEAR( -:^', 10) == []
        assert await store.keyword_search("   ", 10) == []

    async def test_keyword_search_finds_a_small_collection_beside_a_big_one(self, store: VectorStore) -> None:
        big = [make_doc("big", f"/big/{i}.md", ["otters float on their backs"], 10 + i) for i in range(30)]
        small = make_doc("small", "/small/a.md", ["sea otters hold hands"], 99)
        await store.upsert_documents([*big, small])
        ranked = await store.keyword_search("Where do otters sleep?", 3, collection="small")
        assert [cid for cid, _ in ranked] == [small[1][0].chunk_id]  # 30 better-or-equal matches elsewhere
        assert len(await store.keyword_search("otters", 5, collection="big")) == 5
        # a question made only of stop words still searches (nothing else to go on)
        assert await store.keyword_search("what is it?", 3) == []

    async def test_vector_search_finds_nearest_and_filters(self, store: VectorStore) -> None:
        docs = [make_doc("alpha", f"/docs/d{i}.md", [f"text {i} {j}" for j in range(5)], 10 + i) for i in range(6)]
        other = make_doc("beta", "/docs/x/beta.md", ["beta text"], 99)
        await store.upsert_documents([*docs, other])
        target = docs[3]
        ranked = await store.vector_search(target[2][2], 5, collection="alpha")
        assert ranked[0][0] == target[1][2].chunk_id
        assert ranked[0][1] == pytest.approx(1.0, abs=1e-2)
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
        assert len(ranked) == 5
        only_beta = await store.vector_search(target[2][2], 5, collection="beta")
        assert [cid for cid, _ in only_beta] == [other[1][0].chunk_id]
        globbed = await store.vector_search(target[2][2], 3, path_glob="/docs/d5.md")
        assert {cid for cid, _ in globbed} <= {c.chunk_id for c in docs[5][1]} and len(globbed) == 3

    async def test_replace_document_replaces_exactly_its_chunks(self, store: VectorStore) -> None:
        old = make_doc("alpha", "/docs/a.md", ["zebra stripes", "giraffe necks", "lion manes"], 5)
        keep = make_doc("alpha", "/docs/b.md", ["zebra crossing in town"], 6)
        await store.upsert_documents([old, keep])
        version = await store.index_version("alpha")
        new = make_doc("alpha", "/docs/a.md", ["hippo rivers"], 7, content_hash="sha-new")
        await store.upsert_documents([new])
        assert await store.index_version("alpha") > version
        assert (await store.get_document(new[0].doc_id)).chunk_count == 1
        assert [cid for cid, _ in await store.keyword_search("zebra", 10)] == [keep[1][0].chunk_id]
        assert await store.fetch_hits([old[1][1].chunk_id, old[1][2].chunk_id]) == {}
        nearest = await store.vector_search(old[2][1], 10)
        assert {cid for cid, _ in nearest} == {new[1][0].chunk_id, keep[1][0].chunk_id}

    async def test_delete_documents(self, store: VectorStore) -> None:
        a = make_doc("alpha", "/docs/a.md", ["walrus tusks"], 8)
        b = make_doc("alpha", "/docs/b.md", ["penguin wings"], 9)
        await store.upsert_documents([a, b])
        version = await store.index_version("alpha")
        deleted = await store.delete_documents([a[0].doc_id, "no-such-doc"])
        assert [d.doc_id for d in deleted] == [a[0].doc_id]
        assert await store.index_version("alpha") > version
        assert await store.keyword_search("walrus", 5) == []
        assert [cid for cid, _ in await store.vector_search(a[2][0], 5)] == [b[1][0].chunk_id]
        with pytest.raises(NotFoundError):
            await store.get_document(a[0].doc_id)
        assert [d.path for d in await store.list_documents("alpha")] == ["/docs/b.md"]
        assert await store.delete_documents(["no-such-doc"]) == []

    async def test_failed_batch_leaves_store_unchanged(self, store: VectorStore) -> None:
        base = make_doc("alpha", "/docs/base.md", ["baseline koala"], 20)
        await store.upsert_documents([base])
        version = await store.index_version("alpha")
        good = make_doc("alpha", "/docs/good.md", ["fresh wombat"], 21)
        # bad input 1: a second document reusing the first one's chunk id violates uniqueness mid-batch
        clash_doc, clash_chunks, clash_vectors = make_doc("alpha", "/docs/clash.md", ["clash"], 22)
        clash_chunks = [ChunkRecord(good[1][0].chunk_id, clash_doc.doc_id, 0, "", "clash", "h-clash", 1)]
        with pytest.raises(StorageError):
            await store.upsert_documents([good, (clash_doc, clash_chunks, clash_vectors)])
        # bad input 2: vectors that do not match the chunks
        with pytest.raises(StorageError):
            await store.upsert_documents([(good[0], good[1], unit_vectors(3, 1))])
        # bad input 3: an invalid collection name
        bad = make_doc("../etc", "/docs/bad.md", ["x"], 23)
        with pytest.raises(InvalidRequestError):
            await store.upsert_documents([bad])
        assert await store.index_version("alpha") == version
        assert await store.collections() == {"alpha": 1}
        assert await store.keyword_search("wombat", 5) == []
        assert [cid for cid, _ in await store.vector_search(good[2][0], 5)] == [base[1][0].chunk_id]

    async def test_iter_documents_round_trips_vectors(self, store: VectorStore) -> None:
        docs = [make_doc("alpha", f"/docs/{i}.md", [f"chunk {i} {j}" for j in range(3)], 30 + i) for i in range(3)]
        await store.upsert_documents(docs)
        seen = {}
        async for doc, chunks, vectors in store.iter_documents("alpha"):
            seen[doc.path] = (chunks, vectors)
        assert sorted(seen) == [d[0].path for d in docs]
        for doc, chunks, vectors in docs:
            got_chunks, got_vectors = seen[doc.path]
            assert [c.text for c in got_chunks] == [c.text for c in chunks]
            np.testing.assert_allclose(got_vectors, vectors, atol=1e-3)

    async def test_tenants_share_no_collection_document_or_hit(self, store: VectorStore) -> None:
        """Two tenants, one collection name: neither lists, reads, finds, reuses nor deletes the other's."""
        from dataclasses import replace

        a_doc, a_chunks, a_vec = make_doc("shared", "/t/a.md", ["walrus tusks are ivory"], 21)
        b_doc, b_chunks, b_vec = make_doc("shared", "/t/b.md", ["walrus colonies sleep on ice"], 22)
        a_doc, b_doc = replace(a_doc, tenant="tenant-a"), replace(b_doc, tenant="tenant-b")
        await store.upsert_documents([(a_doc, a_chunks, a_vec), (b_doc, b_chunks, b_vec)])
        assert await store.collections(tenant="tenant-a") == {"shared": 1}
        assert "shared" not in await store.collections()  # the anonymous tenant sees neither
        with pytest.raises(NotFoundError):
            await store.get_document(b_doc.doc_id, tenant="tenant-a")
        hits = await store.keyword_search("walrus", collection="shared", k=10, tenant="tenant-a")
        assert {chunk_id for chunk_id, _ in hits} == {a_chunks[0].chunk_id}
        near = await store.vector_search(b_vec[0], collection="shared", k=10, tenant="tenant-a")
        assert {chunk_id for chunk_id, _ in near} == {a_chunks[0].chunk_id}
        assert await store.vectors_for_hashes([b_chunks[0].content_hash], tenant="tenant-a") == {}
        assert await store.delete_documents([b_doc.doc_id], tenant="tenant-a") == []
        assert (await store.get_document(b_doc.doc_id, tenant="tenant-b")).path == "/t/b.md"
