"""The embedded store: SQLite (WAL) + FTS5 + one usearch HNSW index per tenant's collection, in one directory.

Layout of ``directory``: ``store.sqlite3`` holds collections, documents, chunks, their float32
vectors (the source of truth) and an FTS5 table (Porter-stemmed, BM25 ranking via ``bm25()``);
``ann/<space>.usearch`` holds a derived HNSW index (cosine metric) keyed by the chunk's SQLite
rowid, one per *space*, a tenant's collection (:mod:`sovereign.rag.stores.embedded_ann`). Every query
filters on the tenant in SQL and searches only that tenant's indexes (see
:class:`~sovereign.rag.stores.base.VectorStore`).

Writes commit to SQLite first and then update the in-memory index; the index file is saved
by :meth:`flush` / :meth:`close`. On :meth:`open` every index is reconciled with SQLite (missing
keys added from stored vectors, stale keys removed, an unreadable file rebuilt), so a crash at any
moment (SIGKILL included) loses nothing and leaves no ghost. Several processes may share one
directory (a server and a CLI ``ingest``): every collection's ``version`` counter (bumped in the
same transaction as each write) is compared with the version the in-memory index was last synced
at, one small SELECT per vector search, and a collection changed by another process is reconciled
the same way before the search runs.

Why usearch: measured in ``bench/rag_bench.py`` against exact search (recall@10 and p50 on 200k
vectors); it is a single wheel with no server and supports deletion and incremental adds.

All SQLite and usearch work runs on one dedicated thread, a :class:`~sovereign.storage.SqliteWorker`
(SQLite connections are bound to the thread that made them; the event loop never blocks). The
SQLite schema is versioned by :data:`~sovereign.rag.stores.embedded_schema.MIGRATIONS` (store
``rag_embedded``). Errors: ``sqlite3.Error`` and usearch failures become
:class:`~sovereign.errors.StorageError`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sovereign.errors import NotFoundError, StorageError
from sovereign.rag.models import ANONYMOUS, ChunkRecord, DocumentRecord, SearchHit
from sovereign.rag.stores.base import Ranked, check_collection, query_terms
from sovereign.rag.stores.embedded_ann import Space, SpaceIndexes, space_name
from sovereign.rag.stores.embedded_schema import MIGRATIONS
from sovereign.storage import SqliteWorker

T = TypeVar("T")

__all__ = ["KEYWORD_OVERFETCH", "MIGRATIONS", "EmbeddedStore", "space_name"]

_HIT_SQL = """SELECT c.chunk_id, c.doc_id, d.path, d.title, c.text, c.heading, c.ordinal, d.collection
FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.tenant = ? AND c.chunk_id IN ({})"""


KEYWORD_OVERFETCH = 4  # FTS5 candidates per wanted keyword hit before the tenant/collection/path filters


class EmbeddedStore:
    """SQLite + FTS5 + usearch document store in ``directory`` (created if missing).

    Args:
        directory: where ``store.sqlite3`` and ``ann/`` live.
        dimensions: vector length (384 for all-MiniLM-L6-v2).
        connectivity / expansion_add / expansion_search: usearch HNSW ``M``, ``ef_construction``
            and ``ef_search`` (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
            search using HNSW graphs", TPAMI 2018).
    """

    name = "embedded"

    def __init__(
        self, directory: Path, dimensions: int = 384, *, connectivity: int = 16, expansion_add: int = 64,
        expansion_search: int = 160,
    ) -> None:
        self.directory = Path(directory)
        self.dimensions = dimensions
        options = {"connectivity": connectivity, "expansion_add": expansion_add, "expansion_search": expansion_search}
        # autocommit: every write takes its own BEGIN IMMEDIATE
        self._worker = SqliteWorker(self.directory / "store.sqlite3", label=f"the embedded store {self.directory}",
                                    thread_name="rag-sqlite")
        self.schema_version = 0  # set by open(): the number of applied MIGRATIONS
        self._ann = SpaceIndexes(self.directory, dimensions, options)  # store thread only

    # -- plumbing ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the store's thread (``fn`` uses :attr:`db`). Raises StorageError."""
        if not self._worker.is_open:
            raise StorageError("The embedded store is not open; call open() first.")
        return await self._worker.run(lambda _db, *a: fn(*a), *args)

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite connection (store thread only). Raises StorageError when not open."""
        if not self._worker.is_open:
            raise StorageError("The embedded store is not open; call open() first.")
        return self._worker.conn

    # -- lifecycle --------------------------------------------------------------------------
    async def open(self) -> None:
        """Open (and migrate) ``store.sqlite3``, load and reconcile every collection's index.

        Raises:
            StorageError: the directory or database cannot be opened. ConfigError: the database
                was written by a newer Sovereign.
        """
        if self._worker.is_open:
            return
        await self._worker.aopen()
        try:
            await self._run(self._open_sync)
        except Exception:
            await self.close()
            raise

    def _open_sync(self) -> None:
        self.schema_version = MIGRATIONS.apply(self.db)
        self._ann.load_all(self.db)

    async def flush(self) -> None:
        """Save every changed ANN index file (no-op when closed). Raises StorageError."""
        if self._worker.is_open:
            await self._run(self._ann.flush)

    async def close(self) -> None:
        """Save the indexes, close the database and the thread; idempotent. Raises StorageError."""
        if not self._worker.is_open:
            return
        try:
            await self._run(self._close_sync)
        finally:
            await self._worker.aclose()

    def _close_sync(self) -> None:
        try:
            self._ann.flush()
        finally:
            self._ann.clear()

    # -- reads ------------------------------------------------------------------------------
    async def collections(self, *, tenant: str = ANONYMOUS) -> dict[str, int]:
        sql = ("SELECT c.name, COUNT(d.doc_id) FROM collections c LEFT JOIN documents d "
               "ON d.tenant = c.tenant AND d.collection = c.name WHERE c.tenant = ? GROUP BY c.name ORDER BY c.name")
        return await self._run(lambda: {n: k for n, k in self.db.execute(sql, (tenant,)).fetchall()})

    async def index_version(self, collection: str, *, tenant: str | None = ANONYMOUS) -> int:
        if tenant is None:
            sql, args = "SELECT COALESCE(SUM(version), 0) FROM collections WHERE name = ?", [collection]
        else:
            sql, args = "SELECT version FROM collections WHERE tenant = ? AND name = ?", [tenant, collection]
        row = await self._run(lambda: self.db.execute(sql, args).fetchone())
        return int(row[0]) if row else 0

    async def known_documents(self, collection: str, *, tenant: str = ANONYMOUS) -> dict[str, tuple[str, str]]:
        sql = "SELECT path, doc_id, content_hash FROM documents WHERE tenant = ? AND collection = ?"
        return await self._run(lambda: {p: (d, h) for p, d, h in self.db.execute(sql, (tenant, collection))})

    async def vectors_for_hashes(self, hashes: Sequence[str], *, tenant: str = ANONYMOUS) -> dict[str, np.ndarray]:
        def work() -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            unique = list(dict.fromkeys(hashes))
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                sql = (f"SELECT content_hash, vector FROM chunks WHERE content_hash IN ({','.join('?' * len(part))}) "
                       "AND tenant = ?")
                for h, blob in self.db.execute(sql, [*part, tenant]):
                    out[h] = np.frombuffer(blob, dtype=np.float32)
            return out

        return await self._run(work)

    async def get_document(self, doc_id: str, *, tenant: str = ANONYMOUS) -> DocumentRecord:
        docs = await self._run(self._documents_sync, "d.doc_id = ? AND d.tenant = ?", (doc_id, tenant), 1, 0)
        if not docs:
            raise NotFoundError(f"No document with id {doc_id!r}.", param="id")
        return docs[0]

    async def list_documents(
        self, collection: str | None = None, *, limit: int = 100, offset: int = 0, tenant: str = ANONYMOUS
    ) -> list[DocumentRecord]:
        where, params = (("d.tenant = ? AND d.collection = ?", (tenant, collection)) if collection
                         else ("d.tenant = ?", (tenant,)))
        return await self._run(self._documents_sync, where, params, limit, offset)

    def _documents_sync(self, where: str, params: tuple[Any, ...], limit: int, offset: int) -> list[DocumentRecord]:
        sql = (f"SELECT d.doc_id, d.collection, d.path, d.title, d.content_hash, d.size, d.metadata, "
               f"(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id), d.tenant FROM documents d WHERE {where} "
               f"ORDER BY d.collection, d.path LIMIT ? OFFSET ?")
        return [DocumentRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
                for r in self.db.execute(sql, (*params, limit, offset))]

    async def keyword_search(
        self, query: str, k: int, *, collection: str | None = None, path_glob: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> Ranked:
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        return await self._run(self._keyword_search_sync, match, k, tenant, collection, path_glob)

    def _keyword_search_sync(
        self, match: str, k: int, tenant: str, collection: str | None, path_glob: str | None
    ) -> Ranked:
        """BM25 top ``k``: rank in FTS5 alone first (``KEYWORD_OVERFETCH`` x k rows, no join), then
        filter (tenant, collection, path); only when the filters leave fewer than ``k`` of a full
        candidate list is the whole match set joined and ranked (joining every match before ranking
        cost 3x on the Python docs)."""
        weights = "bm25(chunks_fts, 2.0, 2.0, 1.0)"
        filters, params = " AND c.tenant = ?", [match, tenant]
        if collection:
            filters += " AND c.collection = ?"
            params.append(collection)
        if path_glob:
            filters += " AND d.path GLOB ?"
            params.append(path_glob)
        join = "JOIN chunks c ON c.id = f.id JOIN documents d ON d.doc_id = c.doc_id"
        limit = k * KEYWORD_OVERFETCH
        sql = (f"SELECT c.chunk_id, f.s FROM (SELECT rowid AS id, {weights} AS s FROM chunks_fts "
               f"WHERE chunks_fts MATCH ? ORDER BY s LIMIT {limit}) f {join} WHERE true{filters} ORDER BY f.s LIMIT ?")
        rows = self.db.execute(sql, [*params, k]).fetchall()
        if len(rows) < k and self.db.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT {limit})", [match]
        ).fetchone()[0] == limit:
            full = (f"SELECT c.chunk_id, f.s FROM (SELECT rowid AS id, {weights} AS s FROM chunks_fts "
                    f"WHERE chunks_fts MATCH ?) f {join} WHERE true{filters} ORDER BY f.s LIMIT ?")
            rows = self.db.execute(full, [*params, k]).fetchall()
        # SQLite's bm25() is negated BM25 (lower is better): flip the sign so higher is better
        return [(cid, -float(s)) for cid, s in rows]

    async def vector_search(
        self, vector: np.ndarray, k: int, *, collection: str | None = None, path_glob: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> Ranked:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        return await self._run(self._vector_search_sync, query, k, tenant, collection, path_glob)

    def _vector_search_sync(
        self, query: np.ndarray, k: int, tenant: str, collection: str | None, path_glob: str | None
    ) -> Ranked:
        self._ann.catch_up_changed(self.db, tenant, collection)
        spaces = [space_name(tenant, collection)] if collection else self._ann.of_tenant(tenant)
        found: list[tuple[int, float]] = []
        for space in spaces:
            index = self._ann.indexes.get(space)
            if index is None or len(index) == 0:
                continue
            want = min(len(index), k * 8 if path_glob else k)
            matches = index.search(query, want)
            found += [(int(key), 1.0 - float(d)) for key, d in zip(matches.keys, matches.distances, strict=True)]
            if path_glob and len(index) > want:
                found += self._exact_sync(query, k, self._ann.spaces[space], path_glob)  # rare filters: exact
        if not found:
            return []
        ids = list(dict.fromkeys(key for key, _ in found))
        sql = ("SELECT c.id, c.chunk_id FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
               "WHERE c.tenant = ? AND c.id IN ({})")
        params: list[Any] = [tenant, *ids]
        if path_glob:
            sql += " AND d.path GLOB ?"
            params.append(path_glob)
        names_by_id = dict(self.db.execute(sql.format(",".join("?" * len(ids))), params).fetchall())
        best: dict[str, float] = {}
        for key, sim in found:
            cid = names_by_id.get(key)
            if cid is not None:
                best[cid] = max(sim, best.get(cid, -2.0))
        return sorted(best.items(), key=lambda kv: kv[1], reverse=True)[:k]

    def _exact_sync(self, query: np.ndarray, k: int, space: Space, path_glob: str) -> list[tuple[int, float]]:
        sql = ("SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
               "WHERE c.tenant = ? AND c.collection = ? AND d.path GLOB ?")
        rows = self.db.execute(sql, (*space, path_glob)).fetchall()
        if not rows:
            return []
        matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        sims = matrix @ query
        top = np.argsort(-sims)[:k]
        return [(int(rows[i][0]), float(sims[i])) for i in top]

    async def fetch_hits(self, chunk_ids: Sequence[str], *, tenant: str = ANONYMOUS) -> dict[str, SearchHit]:
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}

        def work() -> dict[str, SearchHit]:
            rows = self.db.execute(_HIT_SQL.format(",".join("?" * len(ids))), [tenant, *ids]).fetchall()
            return {r[0]: SearchHit(r[0], r[1], r[2], r[3], r[4], 0.0, r[5],
                                    {"ordinal": r[6], "collection": r[7]}) for r in rows}

        return await self._run(work)

    async def iter_documents(
        self, collection: str, *, tenant: str = ANONYMOUS
    ) -> AsyncIterator[tuple[DocumentRecord, list[ChunkRecord], np.ndarray]]:
        offset = 0
        while True:
            docs = await self.list_documents(collection, limit=50, offset=offset, tenant=tenant)
            if not docs:
                return
            for doc in docs:
                chunks, vectors = await self._run(self._chunks_sync, doc.doc_id)
                yield doc, chunks, vectors
            offset += len(docs)

    def _chunks_sync(self, doc_id: str) -> tuple[list[ChunkRecord], np.ndarray]:
        sql = ("SELECT chunk_id, doc_id, ordinal, heading, text, content_hash, token_count, vector "
               "FROM chunks WHERE doc_id = ? ORDER BY ordinal")
        rows = self.db.execute(sql, (doc_id,)).fetchall()
        chunks = [ChunkRecord(*r[:7]) for r in rows]
        vectors = (np.stack([np.frombuffer(r[7], dtype=np.float32) for r in rows]) if rows
                   else np.zeros((0, self.dimensions), dtype=np.float32))
        return chunks, vectors

    # -- writes -----------------------------------------------------------------------------
    async def upsert_documents(
        self, items: Sequence[tuple[DocumentRecord, Sequence[ChunkRecord], np.ndarray]]
    ) -> None:
        for doc, chunks, vectors in items:
            check_collection(doc.collection)
            if len(chunks) != len(vectors) or (len(vectors) and vectors.shape[1] != self.dimensions):
                raise StorageError(f"{len(chunks)} chunks but vectors of shape {vectors.shape} for {doc.path}.")
        if items:
            await self._run(self._upsert_sync, items)

    def _upsert_sync(self, items: Sequence[tuple[DocumentRecord, Sequence[ChunkRecord], np.ndarray]]) -> None:
        db = self.db
        added: list[tuple[str, int, np.ndarray]] = []
        removed: list[tuple[str, list[int]]] = []
        touched = {(doc.tenant, doc.collection) for doc, _, _ in items}
        db.execute("BEGIN IMMEDIATE")
        try:
            before = self._ann.versions_of(db, touched)
            for doc, chunks, vectors in items:
                owner = db.execute("SELECT tenant FROM documents WHERE doc_id = ?", (doc.doc_id,)).fetchone()
                if owner is not None and owner[0] != doc.tenant:
                    raise StorageError(f"Document id {doc.doc_id!r} is already in use; documents get new ids "
                                       "from their tenant, collection and path.")
                space = self._ann.space(doc.tenant, doc.collection)
                removed.append((space, self._delete_chunks_sync(doc.doc_id)))
                db.execute("INSERT INTO collections (tenant, name, version) VALUES (?, ?, 1) ON CONFLICT "
                           "(tenant, name) DO UPDATE SET version = version + 1", (doc.tenant, doc.collection))
                db.execute(
                    "INSERT INTO documents (doc_id, tenant, collection, path, title, content_hash, size, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (doc_id) DO UPDATE SET title = excluded.title, "
                    "content_hash = excluded.content_hash, size = excluded.size, metadata = excluded.metadata",
                    (doc.doc_id, doc.tenant, doc.collection, doc.path, doc.title, doc.content_hash, doc.size,
                     json.dumps(doc.metadata)),
                )
                for chunk, vector in zip(chunks, vectors, strict=True):
                    cur = db.execute(
                        "INSERT INTO chunks (chunk_id, doc_id, tenant, collection, ordinal, heading, text, "
                        "content_hash, token_count, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (chunk.chunk_id, doc.doc_id, doc.tenant, doc.collection, chunk.ordinal, chunk.heading,
                         chunk.text, chunk.content_hash, chunk.token_count,
                         np.asarray(vector, dtype=np.float32).tobytes()),
                    )
                    rowid = int(cur.lastrowid or 0)
                    db.execute("INSERT INTO chunks_fts (rowid, title, heading, text) VALUES (?, ?, ?, ?)",
                               (rowid, doc.title, chunk.heading, chunk.text))
                    added.append((space, rowid, vector))
            after = self._ann.versions_of(db, touched)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._ann.apply(added, removed)
        self._ann.advance(before, after)

    def _delete_chunks_sync(self, doc_id: str) -> list[int]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        if ids:
            marks = ",".join("?" * len(ids))
            self.db.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", ids)
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        return ids

    async def delete_documents(self, doc_ids: Sequence[str], *, tenant: str = ANONYMOUS) -> list[DocumentRecord]:
        return await self._run(self._delete_sync, list(doc_ids), tenant)

    def _delete_sync(self, doc_ids: list[str], tenant: str) -> list[DocumentRecord]:
        deleted: list[DocumentRecord] = []
        removed: list[tuple[str, list[int]]] = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before: dict[str, int] = {}
            for doc_id in doc_ids:
                found = self._documents_sync("d.doc_id = ? AND d.tenant = ?", (doc_id, tenant), 1, 0)
                if not found:
                    continue
                space = self._ann.space(tenant, found[0].collection)
                if space not in before:  # its version before our first bump
                    before.update(self._ann.versions_of(self.db, {(tenant, found[0].collection)}))
                deleted.append(found[0])
                removed.append((space, self._delete_chunks_sync(doc_id)))
                self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                self.db.execute("UPDATE collections SET version = version + 1 WHERE tenant = ? AND name = ?",
                                (tenant, found[0].collection))
            after = self._ann.versions_of(self.db, {(tenant, d.collection) for d in deleted})
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._ann.apply([], removed)
        self._ann.advance(before, after)
        return deleted
