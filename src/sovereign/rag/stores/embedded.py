"""The embedded store: SQLite (WAL) + FTS5 + one usearch HNSW index per collection, in one directory.

Layout of ``directory``: ``store.sqlite3`` holds collections, documents, chunks, their float32
vectors (the source of truth) and an FTS5 table (Porter-stemmed, BM25 ranking via ``bm25()``);
``ann/<collection>.usearch`` holds a derived HNSW index (cosine metric) keyed by the chunk's SQLite
rowid. Writes commit to SQLite first and then update the in-memory index; the index file is saved
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
SQLite schema is versioned by :data:`MIGRATIONS` (store ``rag_embedded``). Errors: ``sqlite3.Error``
and usearch failures become :class:`~sovereign.errors.StorageError`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sovereign.errors import NotFoundError, StorageError
from sovereign.rag.models import ChunkRecord, DocumentRecord, SearchHit
from sovereign.rag.stores.base import Ranked, check_collection, query_terms
from sovereign.storage import Migrations, SqliteWorker, execute_script

log = logging.getLogger("sovereign.rag.embedded")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, collection TEXT NOT NULL REFERENCES collections(name), path TEXT NOT NULL,
    title TEXT NOT NULL, content_hash TEXT NOT NULL, size INTEGER NOT NULL, metadata TEXT NOT NULL,
    UNIQUE (collection, path));
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE, collection TEXT NOT NULL,
    ordinal INTEGER NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL, content_hash TEXT NOT NULL,
    token_count INTEGER NOT NULL, vector BLOB NOT NULL, UNIQUE (doc_id, ordinal));
CREATE INDEX IF NOT EXISTS chunks_collection ON chunks (collection);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks (content_hash);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (title, heading, text, tokenize = 'porter unicode61');
"""
MIGRATIONS: Migrations[Callable[[sqlite3.Connection], None]] = Migrations("rag_embedded")


@MIGRATIONS.step
def m001_initial(db: sqlite3.Connection) -> None:
    """The schema of the release before versioned migrations (adopted as is)."""
    execute_script(db, _SCHEMA)


_HIT_SQL = """SELECT c.chunk_id, c.doc_id, d.path, d.title, c.text, c.heading, c.ordinal, d.collection
FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.chunk_id IN ({})"""


KEYWORD_OVERFETCH = 4  # FTS5 candidates per wanted keyword hit before the collection/path filters


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
        self._ann_options: dict[str, Any] = {"connectivity": connectivity, "expansion_add": expansion_add,
                                             "expansion_search": expansion_search}
        # autocommit: every write takes its own BEGIN IMMEDIATE
        self._worker = SqliteWorker(self.directory / "store.sqlite3", label=f"the embedded store {self.directory}",
                                    thread_name="rag-sqlite")
        self.schema_version = 0  # set by open(): the number of applied MIGRATIONS
        self._indexes: dict[str, Any] = {}
        self._versions: dict[str, int] = {}  # collection -> SQLite version its in-memory index reflects
        self._dirty: set[str] = set()

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

    def _new_index(self) -> Any:
        from sovereign.rag.ann import new_index

        return new_index(self.dimensions, "cos", **self._ann_options)

    def _ann_path(self, collection: str) -> Path:
        return self.directory / "ann" / f"{collection}.usearch"

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
        (self.directory / "ann").mkdir(parents=True, exist_ok=True)
        db = self.db
        self.schema_version = MIGRATIONS.apply(db)
        for (collection,) in db.execute("SELECT name FROM collections").fetchall():
            self._catch_up(collection)
        for stale in (self.directory / "ann").glob("*.usearch"):
            if stale.stem not in self._indexes:
                stale.unlink()

    def _catch_up(self, collection: str) -> None:
        """Reconcile ``collection``'s index with SQLite and record the version it now reflects.

        Runs in one read transaction, so the version read and the chunk rows come from the same
        snapshot (WAL): a write committed meanwhile by another process bumps the version past the
        recorded one and is caught up by the next search.
        """
        self.db.execute("BEGIN")
        try:
            row = self.db.execute("SELECT version FROM collections WHERE name = ?", (collection,)).fetchone()
            self._indexes[collection] = self._reconcile(collection, self._indexes.get(collection))
            self._versions[collection] = int(row[0]) if row else 0
        finally:
            self.db.execute("COMMIT")

    def _catch_up_changed(self, collection: str | None = None) -> None:
        """Catch up ``collection`` (None: every collection) if its SQLite version moved since its
        index was last synced.

        Another process (``sovereign ingest`` next to a running server) may have written to the
        same directory; this is one small SELECT when nothing changed.
        """
        sql = "SELECT name, version FROM collections"
        args: tuple[str, ...] = ()
        if collection is not None:
            sql, args = sql + " WHERE name = ?", (collection,)
        for name, version in self.db.execute(sql, args).fetchall():
            if self._versions.get(name) != version:
                log.info("collection %s changed outside this process (version %s); catching up", name, version)
                self._catch_up(name)

    def _versions_of(self, collections: set[str]) -> dict[str, int]:
        marks = ",".join("?" * len(collections))
        sql = f"SELECT name, version FROM collections WHERE name IN ({marks})"
        return {n: int(v) for n, v in self.db.execute(sql, sorted(collections)).fetchall()}

    def _advance_versions(self, before: dict[str, int], after: dict[str, int]) -> None:
        """After our own committed write: a collection that was in sync before it is in sync after it.

        One that was already behind (another process wrote first) stays behind, so the next search
        reconciles it in full.
        """
        for name, version in after.items():
            if self._versions.get(name, 0) == before.get(name, 0):
                self._versions[name] = version

    def _reconcile(self, collection: str, index: Any = None) -> Any:
        """Make ``index`` (default: the saved file) hold exactly SQLite's chunk ids of ``collection``."""
        if index is not None:
            return self._sync_keys(collection, index)
        path = self._ann_path(collection)
        index = self._new_index()
        if path.is_file():
            try:
                index.load(str(path))
            except Exception as exc:  # a torn or foreign file: rebuild from SQLite
                log.warning("ANN index %s unreadable (%s); rebuilding", path, type(exc).__name__)
                index = self._new_index()
        return self._sync_keys(collection, index)

    def _sync_keys(self, collection: str, index: Any) -> Any:
        """Add SQLite rows missing from ``index`` and remove keys SQLite no longer has; returns ``index``."""
        have = np.asarray(index.keys, dtype=np.int64) if len(index) else np.zeros(0, dtype=np.int64)
        rows = self.db.execute("SELECT id FROM chunks WHERE collection = ?", (collection,)).fetchall()
        want = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra):
            index.remove(extra.astype(np.uint64))
        for start in range(0, len(missing), 4096):
            ids = missing[start : start + 4096]
            self._add_from_sql(index, [int(i) for i in ids])
        if len(extra) or len(missing):
            log.info("ANN index %s caught up: +%d -%d", collection, len(missing), len(extra))
            self._dirty.add(collection)
        return index

    def _add_from_sql(self, index: Any, ids: list[int]) -> None:
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", ids).fetchall()
        if rows:
            keys = np.array([r[0] for r in rows], dtype=np.uint64)
            vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            index.add(keys, vectors)

    async def flush(self) -> None:
        """Save every changed ANN index file (no-op when closed). Raises StorageError."""
        if self._worker.is_open:
            await self._run(self._flush_sync)

    def _flush_sync(self) -> None:
        for collection in sorted(self._dirty):
            index = self._indexes.get(collection)
            if index is None:
                continue
            # one temporary file per process: two processes saving at once never write the same file
            tmp = self._ann_path(collection).with_suffix(f".{os.getpid()}.tmp")
            try:
                index.save(str(tmp))
                tmp.replace(self._ann_path(collection))  # atomic: a crash leaves the old or the new file
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise StorageError(f"Cannot save the vector index {self._ann_path(collection)}: {exc}") from exc
        self._dirty.clear()

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
            self._flush_sync()
        finally:
            self._indexes.clear()
            self._versions.clear()

    # -- reads ------------------------------------------------------------------------------
    async def collections(self) -> dict[str, int]:
        sql = ("SELECT c.name, COUNT(d.doc_id) FROM collections c LEFT JOIN documents d "
               "ON d.collection = c.name GROUP BY c.name ORDER BY c.name")
        return await self._run(lambda: {n: k for n, k in self.db.execute(sql).fetchall()})

    async def index_version(self, collection: str) -> int:
        row = await self._run(
            lambda: self.db.execute("SELECT version FROM collections WHERE name = ?", (collection,)).fetchone()
        )
        return int(row[0]) if row else 0

    async def known_documents(self, collection: str) -> dict[str, tuple[str, str]]:
        sql = "SELECT path, doc_id, content_hash FROM documents WHERE collection = ?"
        return await self._run(lambda: {p: (d, h) for p, d, h in self.db.execute(sql, (collection,))})

    async def vectors_for_hashes(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        def work() -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            unique = list(dict.fromkeys(hashes))
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                sql = f"SELECT content_hash, vector FROM chunks WHERE content_hash IN ({','.join('?' * len(part))})"
                for h, blob in self.db.execute(sql, part):
                    out[h] = np.frombuffer(blob, dtype=np.float32)
            return out

        return await self._run(work)

    async def get_document(self, doc_id: str) -> DocumentRecord:
        docs = await self._run(self._documents_sync, "d.doc_id = ?", (doc_id,), 1, 0)
        if not docs:
            raise NotFoundError(f"No document with id {doc_id!r}.", param="id")
        return docs[0]

    async def list_documents(
        self, collection: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[DocumentRecord]:
        where, params = ("d.collection = ?", (collection,)) if collection else ("1 = 1", ())
        return await self._run(self._documents_sync, where, params, limit, offset)

    def _documents_sync(self, where: str, params: tuple[Any, ...], limit: int, offset: int) -> list[DocumentRecord]:
        sql = (f"SELECT d.doc_id, d.collection, d.path, d.title, d.content_hash, d.size, d.metadata, "
               f"(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id) FROM documents d WHERE {where} "
               f"ORDER BY d.collection, d.path LIMIT ? OFFSET ?")
        return [DocumentRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7])
                for r in self.db.execute(sql, (*params, limit, offset))]

    async def keyword_search(
        self, query: str, k: int, *, collection: str | None = None, path_glob: str | None = None
    ) -> Ranked:
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        return await self._run(self._keyword_search_sync, match, k, collection, path_glob)

    def _keyword_search_sync(self, match: str, k: int, collection: str | None, path_glob: str | None) -> Ranked:
        """BM25 top ``k``: rank in FTS5 alone first (``KEYWORD_OVERFETCH`` x k rows, no join), then
        filter; only when the filters leave fewer than ``k`` of a full candidate list is the whole
        match set joined and ranked (joining every match before ranking cost 3x on the Python docs)."""
        weights = "bm25(chunks_fts, 2.0, 2.0, 1.0)"
        filters, params = "", [match]
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
        if len(rows) < k and filters and self.db.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT {limit})", [match]
        ).fetchone()[0] == limit:
            full = (f"SELECT c.chunk_id, f.s FROM (SELECT rowid AS id, {weights} AS s FROM chunks_fts "
                    f"WHERE chunks_fts MATCH ?) f {join} WHERE true{filters} ORDER BY f.s LIMIT ?")
            rows = self.db.execute(full, [*params, k]).fetchall()
        # SQLite's bm25() is negated BM25 (lower is better): flip the sign so higher is better
        return [(cid, -float(s)) for cid, s in rows]

    async def vector_search(
        self, vector: np.ndarray, k: int, *, collection: str | None = None, path_glob: str | None = None
    ) -> Ranked:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        return await self._run(self._vector_search_sync, query, k, collection, path_glob)

    def _vector_search_sync(
        self, query: np.ndarray, k: int, collection: str | None, path_glob: str | None
    ) -> Ranked:
        self._catch_up_changed(collection)
        names = [collection] if collection else list(self._indexes)
        found: list[tuple[int, float]] = []
        for name in names:
            index = self._indexes.get(name)
            if index is None or len(index) == 0:
                continue
            want = min(len(index), k * 8 if path_glob else k)
            matches = index.search(query, want)
            found += [(int(key), 1.0 - float(d)) for key, d in zip(matches.keys, matches.distances, strict=True)]
            if path_glob and len(index) > want:
                found += self._exact_sync(query, k, name, path_glob)  # rare filters: exact on the subset
        if not found:
            return []
        ids = list(dict.fromkeys(key for key, _ in found))
        sql = "SELECT c.id, c.chunk_id FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.id IN ({})"
        params: list[Any] = list(ids)
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

    def _exact_sync(self, query: np.ndarray, k: int, collection: str, path_glob: str) -> list[tuple[int, float]]:
        sql = ("SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
               "WHERE c.collection = ? AND d.path GLOB ?")
        rows = self.db.execute(sql, (collection, path_glob)).fetchall()
        if not rows:
            return []
        matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        sims = matrix @ query
        top = np.argsort(-sims)[:k]
        return [(int(rows[i][0]), float(sims[i])) for i in top]

    async def fetch_hits(self, chunk_ids: Sequence[str]) -> dict[str, SearchHit]:
        ids = list(dict.fromkeys(chunk_ids))
        if not ids:
            return {}

        def work() -> dict[str, SearchHit]:
            rows = self.db.execute(_HIT_SQL.format(",".join("?" * len(ids))), ids).fetchall()
            return {r[0]: SearchHit(r[0], r[1], r[2], r[3], r[4], 0.0, r[5],
                                    {"ordinal": r[6], "collection": r[7]}) for r in rows}

        return await self._run(work)

    async def iter_documents(
        self, collection: str
    ) -> AsyncIterator[tuple[DocumentRecord, list[ChunkRecord], np.ndarray]]:
        offset = 0
        while True:
            docs = await self.list_documents(collection, limit=50, offset=offset)
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
        touched = {doc.collection for doc, _, _ in items}
        db.execute("BEGIN IMMEDIATE")
        try:
            before = self._versions_of(touched)
            for doc, chunks, vectors in items:
                removed.append((doc.collection, self._delete_chunks_sync(doc.doc_id)))
                db.execute("INSERT INTO collections (name, version) VALUES (?, 1) "
                           "ON CONFLICT (name) DO UPDATE SET version = version + 1", (doc.collection,))
                db.execute(
                    "INSERT INTO documents (doc_id, collection, path, title, content_hash, size, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (doc_id) DO UPDATE SET title = excluded.title, "
                    "content_hash = excluded.content_hash, size = excluded.size, metadata = excluded.metadata",
                    (doc.doc_id, doc.collection, doc.path, doc.title, doc.content_hash, doc.size,
                     json.dumps(doc.metadata)),
                )
                for chunk, vector in zip(chunks, vectors, strict=True):
                    cur = db.execute(
                        "INSERT INTO chunks (chunk_id, doc_id, collection, ordinal, heading, text, content_hash, "
                        "token_count, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (chunk.chunk_id, doc.doc_id, doc.collection, chunk.ordinal, chunk.heading, chunk.text,
                         chunk.content_hash, chunk.token_count, np.asarray(vector, dtype=np.float32).tobytes()),
                    )
                    rowid = int(cur.lastrowid or 0)
                    db.execute("INSERT INTO chunks_fts (rowid, title, heading, text) VALUES (?, ?, ?, ?)",
                               (rowid, doc.title, chunk.heading, chunk.text))
                    added.append((doc.collection, rowid, vector))
            after = self._versions_of(touched)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._apply_ann(added, removed)
        self._advance_versions(before, after)

    def _delete_chunks_sync(self, doc_id: str) -> list[int]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        if ids:
            marks = ",".join("?" * len(ids))
            self.db.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", ids)
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        return ids

    def _apply_ann(self, added: list[tuple[str, int, np.ndarray]], removed: list[tuple[str, list[int]]]) -> None:
        """Mirror a committed SQLite change into the in-memory indexes (file saved by flush)."""
        for collection, ids in removed:
            index = self._indexes.get(collection)
            if index is not None and ids:
                index.remove(np.asarray(ids, dtype=np.uint64))
                self._dirty.add(collection)
        by_collection: dict[str, list[tuple[int, np.ndarray]]] = {}
        for collection, rowid, vector in added:
            by_collection.setdefault(collection, []).append((rowid, vector))
        for collection, rows in by_collection.items():
            index = self._indexes.setdefault(collection, self._new_index())
            index.add(np.array([r[0] for r in rows], dtype=np.uint64), np.stack([r[1] for r in rows]))
            self._dirty.add(collection)

    async def delete_documents(self, doc_ids: Sequence[str]) -> list[DocumentRecord]:
        return await self._run(self._delete_sync, list(doc_ids))

    def _delete_sync(self, doc_ids: list[str]) -> list[DocumentRecord]:
        deleted: list[DocumentRecord] = []
        removed: list[tuple[str, list[int]]] = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before: dict[str, int] = {}
            for doc_id in doc_ids:
                found = self._documents_sync("d.doc_id = ?", (doc_id,), 1, 0)
                if not found:
                    continue
                if found[0].collection not in before:  # its version before our first bump
                    before.update(self._versions_of({found[0].collection}))
                deleted.append(found[0])
                removed.append((found[0].collection, self._delete_chunks_sync(doc_id)))
                self.db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                self.db.execute("UPDATE collections SET version = version + 1 WHERE name = ?",
                                (found[0].collection,))
            after = self._versions_of({d.collection for d in deleted})
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self._apply_ann([], removed)
        self._advance_versions(before, after)
        return deleted
