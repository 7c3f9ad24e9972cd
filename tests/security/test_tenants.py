"""Tenant isolation of stored data: documents and collections, conversations, agent checkpoints and
cached responses belong to the caller's tenant, in the store layer and over HTTP.

Store layer: the embedded store (SQLite + usearch) and pgvector on the real PostgreSQL of ``pg_uri``,
the document service with the real MiniLM embedder, the SQLite and PostgreSQL conversation stores,
the agent pipeline on its SQLite checkpointer. HTTP: a real gateway process (``start_server``) with
two API keys, the embedded SmolLM2 engine and the response cache on.

Bad inputs tried (tenant B, or A, reaching for the other's data): naming the other's document id
(get, delete, fetch its chunk ids, upsert over it), searching with the other's exact words and
vector (keyword, vector, hybrid; one collection, all collections, a path glob), naming a collection
only the other has, asking for the vectors of the other's chunk hashes, ingesting the same file as
the other (vector reuse would tell B what A holds), reading, appending to, deleting and listing the
other's conversation, resuming the other's agent conversation id, asking the other's cached question,
and an unscopable retriever asked to serve a keyed tenant.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sovereign.agents.backend import AgentBackend
from sovereign.agents.state import AgentDeps
from sovereign.backends.base import collect
from sovereign.config import AgentSettings, load_settings
from sovereign.conversations.store import ConversationStore
from sovereign.errors import NotFoundError, PermissionDeniedError, StorageError
from sovereign.rag.answer import RagChatBackend
from sovereign.rag.chunking import sha256_hex
from sovereign.rag.ingest import SourceFile, doc_id_for
from sovereign.rag.models import ChunkRecord, DocumentRecord, scoped
from sovereign.rag.retrieve import HybridRetriever
from sovereign.rag.service import RagService
from sovereign.rag.stores.base import VectorStore
from sovereign.rag.stores.embedded import EmbeddedStore
from sovereign.rag.stores.pgvector import PgVectorStore
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever
from sovereign.testing.vector_store_contract import unit_vectors
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams
from tests.conftest import LiveServer, start_server

pytestmark = pytest.mark.anyio
A, B = "key-0", "key-1"  # the tenants a gateway gives its first two API keys
SHARED = "This page is part of the shared handbook footer."  # one chunk text both tenants hold
SECRET = {A: "Sea otters hold hands while they sleep so they do not drift apart.",
          B: "Walruses haul themselves onto the ice with their long tusks."}


# -- the vector stores ---------------------------------------------------------------------------
def tenant_doc(tenant: str, path: str, texts: list[str], seed: int, collection: str = "docs",
               dims: int = 384) -> tuple[DocumentRecord, list[ChunkRecord], np.ndarray]:
    """A document of ``tenant`` with the id the ingestor would give it; chunk hashes are the texts'."""
    doc_id = doc_id_for(collection, path, tenant)
    chunks = [ChunkRecord(f"{doc_id}:{i}", doc_id, i, "", text, sha256_hex(text), len(text.split()))
              for i, text in enumerate(texts)]
    vectors = unit_vectors(len(texts), seed)[:, :dims]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc = DocumentRecord(doc_id, collection, path, "Notes", f"sha-{tenant}-{path}", 10, {"kind": "md"},
                         len(chunks), tenant)
    return doc, chunks, vectors


@pytest.fixture(params=["embedded", "pgvector"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    """An opened, empty store of 384 dimensions: the embedded one, or pgvector on the real PostgreSQL."""
    if request.param == "embedded":
        s: VectorStore = EmbeddedStore(tmp_path / "rag")
    else:
        s = PgVectorStore(request.getfixturevalue("pg_uri"), schema=f"tn_{uuid.uuid4().hex[:12]}", pool_max=2)
    await s.open()
    yield s
    await s.close()


async def test_store_answers_each_tenant_from_its_own_rows_only(store: VectorStore) -> None:
    a = tenant_doc(A, "/notes.md", [SECRET[A], SHARED], seed=1)
    b = tenant_doc(B, "/notes.md", [SECRET[B], SHARED], seed=2)  # same collection name, same path
    await store.upsert_documents([a, b])
    a_chunks, b_chunks = {c.chunk_id for c in a[1]}, {c.chunk_id for c in b[1]}
    assert a[0].doc_id != b[0].doc_id

    assert await store.collections(tenant=A) == {"docs": 1} == await store.collections(tenant=B)
    assert await store.collections() == {}  # the anonymous tenant has nothing
    assert [d.doc_id for d in await store.list_documents(tenant=A)] == [a[0].doc_id]
    assert [d.doc_id for d in await store.list_documents("docs", tenant=B)] == [b[0].doc_id]
    assert await store.known_documents("docs", tenant=A) == {"/notes.md": (a[0].doc_id, a[0].content_hash)}
    assert [d.doc_id async for d, _, _ in store.iter_documents("docs", tenant=A)] == [a[0].doc_id]

    # read: B's id is unknown to A, exactly like an id nobody has
    with pytest.raises(NotFoundError) as theirs:
        await store.get_document(b[0].doc_id, tenant=A)
    with pytest.raises(NotFoundError) as nobodys:
        await store.get_document("0" * 24, tenant=A)
    assert theirs.value.message.replace(b[0].doc_id, "ID") == nobodys.value.message.replace("0" * 24, "ID")
    assert (await store.get_document(b[0].doc_id, tenant=B)).tenant == B
    assert await store.fetch_hits(sorted(b_chunks), tenant=A) == {}

    # search: B's exact words and B's exact vector find nothing of B's for A
    for collection in ("docs", None):
        assert await store.keyword_search("walruses tusks ice", 10, collection=collection, tenant=A) == []
        assert {cid for cid, _ in await store.keyword_search("walruses tusks", 10, collection=collection,
                                                             tenant=B)} == {b[1][0].chunk_id}
        near = await store.vector_search(b[2][0], 10, collection=collection, tenant=A)
        assert near and {cid for cid, _ in near} <= a_chunks
    globbed = await store.vector_search(b[2][0], 10, path_glob="/notes.*", tenant=A)
    assert {cid for cid, _ in globbed} <= a_chunks
    assert await store.vector_search(b[2][0], 10, collection="docs") == []  # anonymous: nothing

    # vectors are reused within a tenant only: B's chunk hashes mean nothing to A
    assert set(await store.vectors_for_hashes([sha256_hex(SHARED), sha256_hex(SECRET[B])], tenant=A)) == {
        sha256_hex(SHARED)}

    # versions are per tenant; None sums them (the scope of a caller whose tenant is not known)
    version_a = await store.index_version("docs", tenant=A)
    await store.upsert_documents([tenant_doc(B, "/more.md", ["walrus calves"], seed=3)])
    assert await store.index_version("docs", tenant=A) == version_a
    total = await store.index_version("docs", tenant=None)
    assert total == version_a + await store.index_version("docs", tenant=B)

    # delete: A naming B's id deletes nothing; B's document stays whole
    assert await store.delete_documents([b[0].doc_id], tenant=A) == []
    assert (await store.get_document(b[0].doc_id, tenant=B)).chunk_count == 2
    # write: an upsert as A over B's document id is refused, and changes nothing of B's
    hijack = tenant_doc(A, "/x.md", ["hijack"], seed=4)
    forged = DocumentRecord(b[0].doc_id, "docs", "/x.md", "X", "sha-x", 1, {}, 1, A)
    with pytest.raises(StorageError):
        await store.upsert_documents([(forged, [ChunkRecord("forged:0", b[0].doc_id, 0, "", "hijack", "h", 1)],
                                       hijack[2])])
    assert set(await store.fetch_hits(sorted(b_chunks), tenant=B)) == b_chunks
    assert await store.collections(tenant=A) == {"docs": 1}


# -- the document service with the real embedder ---------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> Iterator[Any]:
    """The real all-MiniLM-L6-v2 (int8 ONNX) for this module."""
    from sovereign.rag.embeddings import OnnxMiniLMEmbedder

    model = OnnxMiniLMEmbedder(load_settings().embeddings)
    yield model
    model._executor.shutdown(wait=True)


@pytest.fixture
async def service(store: VectorStore, minilm: Any) -> RagService:
    return RagService(load_settings(), store, minilm)


def source(tmp_path: Path, name: str, text: str) -> SourceFile:
    path = tmp_path / f"{uuid.uuid4().hex}-{name}"
    path.write_text(f"# Notes\n\n{text}\n\n{SHARED}\n")
    return SourceFile(path, f"upload/{name}")


async def test_ingest_search_delete_and_rag_answers_are_per_tenant(service: RagService, tmp_path: Path) -> None:
    first = await service.ingest_files([source(tmp_path, "notes.md", SECRET[A])], "docs", tenant=A)
    assert first.added == 1 and first.chunks_embedded >= 1
    # B ingests the very same file: nothing of A's is reused (reuse would reveal that A holds it)
    same = await service.ingest_files([source(tmp_path, "notes.md", SECRET[A])], "docs", tenant=B)
    assert same.added == 1 and same.chunks_reused == 0 and same.chunks_embedded == first.chunks_embedded
    await service.ingest_files([source(tmp_path, "notes.md", SECRET[B])], "docs", tenant=B)  # replaces it
    await service.ingest_files([source(tmp_path, "walrus.md", SECRET[B])], "walrus-only", tenant=B)
    (a_doc,) = await service.store.list_documents(tenant=A)
    b_ids = {d.doc_id for d in await service.store.list_documents(tenant=B)}
    assert a_doc.doc_id not in b_ids and len(b_ids) == 2

    hits = await service.retriever_for(A).search("walruses tusks ice", top_k=10)
    assert hits and {h.doc_id for h in hits} == {a_doc.doc_id}
    assert {h.doc_id for h in await service.retriever_for(B).search("walruses tusks", top_k=10)} == b_ids
    with pytest.raises(NotFoundError):  # B's collection does not exist for A
        await service.retriever_for(A).search("walruses", top_k=3, collection="walrus-only")
    with pytest.raises(NotFoundError):
        await service.delete_document(sorted(b_ids)[0], tenant=A)
    assert {d.doc_id for d in await service.store.list_documents(tenant=B)} == b_ids

    # the RAG model answering for A cites A's document only, whatever the question names
    model = FakeChatModel()
    rag = RagChatBackend(lambda: model, service.retriever, collection="docs", top_k=5)
    for tenant, expected in ((A, {a_doc.doc_id}), (B, b_ids)):
        ask = GenerationRequest(model="sovereign-rag", sampling=SamplingParams(max_tokens=16), tenant=tenant,
                                messages=(ChatMessage("user", "What do walruses and sea otters do?"),))
        answer = await collect(rag.stream(ask))
        cited = {s["doc_id"] for s in answer.metadata["sources"]}
        assert cited and cited <= expected
        assert answer.metadata["index_version"] == await service.store.index_version("docs", tenant=tenant)
    assert (await rag.source_scope(None, A))[1] == await service.store.index_version("docs", tenant=A)
    assert (await rag.source_scope(None))[1] == await service.store.index_version("docs", tenant=None)


async def test_an_unscopable_retriever_serves_only_the_anonymous_tenant() -> None:
    plain = FakeRetriever({"a.md": "otters"})
    assert scoped(plain, None) is plain and scoped(plain, "anonymous") is plain
    with pytest.raises(PermissionDeniedError):
        scoped(plain, A)


# -- conversations ---------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
async def conversations(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConversationStore]:
    """The SQLite store in a fresh file, or the PostgreSQL store in a fresh database (dropped after)."""
    if request.param == "sqlite":
        from sovereign.conversations.sqlite import SqliteConversationStore

        store: ConversationStore = await SqliteConversationStore.open(tmp_path / "conversations.sqlite3")
        yield store
        await store.close()
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    from sovereign.conversations.postgres import PostgresConversationStore

    pg_uri = request.getfixturevalue("pg_uri")
    name = f"tenants_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        store = await PostgresConversationStore.open(make_conninfo(pg_uri, dbname=name), max_size=2)
        yield store
        await store.close()
    finally:
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_conversations_are_per_tenant(conversations: ConversationStore) -> None:
    store = conversations
    mine = await store.create("local-smol", tenant=A)
    await store.append(mine.id, "user", "my secret question", tenant=A)
    nobody = uuid.uuid4().hex
    attempts: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.get(mine.id, tenant=B), lambda: store.messages(mine.id, tenant=B),
        lambda: store.append(mine.id, "user", "injected", tenant=B), lambda: store.delete(mine.id, tenant=B),
        lambda: store.get(mine.id),  # the anonymous tenant is a tenant too
    ]
    for attempt in attempts:
        with pytest.raises(NotFoundError) as theirs:
            await attempt()
        with pytest.raises(NotFoundError) as unknown:
            await store.get(nobody, tenant=B)
        assert theirs.value.message.replace(mine.id, "ID") == unknown.value.message.replace(nobody, "ID")
    assert await store.recent(tenant=B) == []
    assert [c.id for c in await store.recent(tenant=A)] == [mine.id]
    assert [m.content for m in await store.messages(mine.id, tenant=A)] == ["my secret question"]  # untouched
    await store.delete(mine.id, tenant=A)
    with pytest.raises(NotFoundError):
        await store.get(mine.id, tenant=A)


# -- agent checkpoints and retrieval ---------------------------------------------------------------
def agent_request(question: str, tenant: str | None, conversation_id: str | None = None) -> GenerationRequest:
    return GenerationRequest(model="sovereign-agent", sampling=SamplingParams(max_tokens=64), tenant=tenant,
                             messages=(ChatMessage("user", question),), conversation_id=conversation_id)


@pytest.fixture
async def agent_store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    """An embedded store of 64 dims holding one document per tenant, embedded by the fake embedder."""
    store = EmbeddedStore(tmp_path / "agent-rag", dimensions=64)
    await store.open()
    embedder = FakeEmbedder()
    for tenant in (A, B):
        doc = tenant_doc(tenant, "/notes.md", [SECRET[tenant]], seed=0, dims=64)
        vectors, _ = await embedder.embed([SECRET[tenant]])
        await store.upsert_documents([(doc[0], doc[1], vectors)])
    yield store
    await store.close()


async def test_agent_threads_and_retrieval_are_per_tenant(agent_store: EmbeddedStore, tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    model = FakeChatModel()
    retriever = HybridRetriever(agent_store, embedder)
    deps = AgentDeps(model=model, retriever=lambda: retriever, embedder=embedder,
                     settings=AgentSettings(checkpointer="sqlite"), collection="docs")
    backend = AgentBackend(deps, tmp_path)
    await backend.start()
    try:
        question = "How do sea otters and walruses sleep on the ice?"
        first = await collect(backend.stream(agent_request(question, A, "shared-1")))
        assert {s["doc_id"] for s in first.metadata["sources"]} == {doc_id_for("docs", "/notes.md", A)}
        mine = await backend.graph.turns("shared-1", A)
        assert [t["content"] for t in mine] == [question, first.text]
        # B names A's conversation id: a fresh thread (no A turn in its prompt), B's documents only
        theirs = await collect(backend.stream(agent_request("And what did I just ask?", B, "shared-1")))
        assert {s["doc_id"] for s in theirs.metadata["sources"]} <= {doc_id_for("docs", "/notes.md", B)}
        assert all(question not in m.content for m in model.calls[-1].messages)
        assert len(await backend.graph.turns("shared-1", B)) == 2
        assert await backend.graph.turns("shared-1") == []  # nor is it the anonymous thread
        assert await backend.graph.turns("shared-1", A) == mine  # A's thread is untouched
        assert backend.graph.warning is None  # the SQLite checkpointer, not the memory fallback
    finally:
        await backend.close()
    # an unscopable retriever is refused for a keyed tenant: the answer degrades, with no sources
    plain = AgentBackend(AgentDeps(model=model, retriever=lambda: FakeRetriever({"x.md": SECRET[B]}),
                                   embedder=embedder, settings=AgentSettings(checkpointer="memory")), tmp_path)
    await plain.start()
    try:
        refused = await collect(plain.stream(agent_request("How do walruses use their tusks?", A)))
        assert refused.metadata["sources"] == [] and refused.metadata["degraded"]
        assert any("PermissionDeniedError" in w for w in refused.metadata["warnings"])
    finally:
        await plain.close()


# -- over HTTP: a real gateway with two API keys ---------------------------------------------------
KEYS = {A: "tenant-test-secret-a", B: "tenant-test-secret-b"}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A gateway whose keys belong to tenants A and B (admin scope: deleting documents needs it);
    cache on; ``docs`` the default collection."""
    server = start_server(tmp_path_factory.mktemp("tenants"), {
        "SOVEREIGN_SERVER__ADMIN_KEYS_ENV": "TENANT_TEST_KEYS",
        "TENANT_TEST_KEYS": f"{KEYS[A]},{KEYS[B]}",
        "SOVEREIGN_ENGINE__N_CTX": "2048", "SOVEREIGN_RAG__DEFAULT_COLLECTION": "docs",
    })
    yield server
    server.stop()


def as_tenant(server: LiveServer, tenant: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=300, headers={"Authorization": f"Bearer {KEYS[tenant]}"})


def upload(http: httpx.Client, text: str, collection: str, name: str = "notes.md") -> None:
    content = base64.b64encode(f"# Notes\n\n{text}\n".encode()).decode()
    r = http.post("/v1/documents", json={"files": [{"filename": name, "content_base64": content}],
                                         "collection": collection})
    assert r.status_code == 200 and r.json()["added"] == 1, r.text


def not_found(response: httpx.Response) -> bool:
    return response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


@pytest.mark.integration
def test_over_http_a_tenant_cannot_reach_another_tenants_data(keyed_server: LiveServer) -> None:
    with as_tenant(keyed_server, A) as a, as_tenant(keyed_server, B) as b:
        upload(a, SECRET[A], "docs")
        upload(b, SECRET[B], "docs")  # the same collection name and file name: two documents
        upload(b, SECRET[B], "walrus-only", "walrus.md")
        a_ids = [d["id"] for d in a.get("/v1/documents").json()["data"]]
        b_docs = b.get("/v1/documents", params={"collection": "docs"}).json()["data"]
        assert len(a_ids) == 1 and len(b_docs) == 1 and b_docs[0]["id"] not in a_ids
        b_id = b_docs[0]["id"]
        assert [d["id"] for d in a.get("/v1/documents", params={"collection": "docs"}).json()["data"]] == a_ids

        # list, read, delete and search B's data as A: 404 or nothing of B's, never 403
        assert not_found(a.get("/v1/documents", params={"collection": "walrus-only"}))
        assert not_found(a.get(f"/v1/documents/{b_id}"))
        assert not_found(a.delete(f"/v1/documents/{b_id}"))
        assert b.get(f"/v1/documents/{b_id}").json()["id"] == b_id  # still there
        for body in ({"query": "walruses tusks ice", "collection": "docs"}, {"query": "walruses tusks ice"}):
            found = a.post("/v1/search", json=body)
            assert found.status_code == 200 and {h["doc_id"] for h in found.json()["data"]} <= set(a_ids)
        assert not_found(a.post("/v1/search", json={"query": "walruses", "collection": "walrus-only"}))
        assert b_id in {h["doc_id"] for h in b.post("/v1/search", json={"query": "walruses tusks"}).json()["data"]}

        # conversations: B can neither read, continue, delete nor list A's
        conv = a.post("/v1/conversations", json={}).json()["id"]
        assert not_found(b.get(f"/v1/conversations/{conv}"))
        assert not_found(b.post(f"/v1/conversations/{conv}/messages", json={"content": "hi", "max_tokens": 1}))
        assert not_found(b.delete(f"/v1/conversations/{conv}"))
        assert conv not in {c["id"] for c in b.get("/v1/conversations").json()["data"]}
        assert conv in {c["id"] for c in a.get("/v1/conversations").json()["data"]}
        assert a.get(f"/v1/conversations/{conv}").json()["messages"] == []

        # the response cache: the same question from A then B is a miss for B
        ask = {"model": load_settings().engine.model_name, "max_tokens": 4, "temperature": 0,
               "messages": [{"role": "user", "content": "Name one ocean animal."}]}
        assert a.post("/v1/chat/completions", json=ask).headers["x-sovereign-cache"] == "miss"
        assert a.post("/v1/chat/completions", json=ask).headers["x-sovereign-cache"] == "hit-exact"
        assert b.post("/v1/chat/completions", json=ask).headers["x-sovereign-cache"] == "miss"

        # the RAG model answers each tenant from its own documents only (and never from the other's cache)
        rag = {"model": "sovereign-rag", "max_tokens": 8, "temperature": 0,
               "messages": [{"role": "user", "content": "What do walruses and sea otters do?"}]}
        for client, own, status in ((a, set(a_ids), "miss"), (b, {b_id}, "miss"), (a, set(a_ids), "hit-exact")):
            answer = client.post("/v1/chat/completions", json=rag)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-sovereign-cache"] == status
            cited = {s["doc_id"] for s in answer.json()["sovereign"]["sources"]}
            assert cited and cited <= own
