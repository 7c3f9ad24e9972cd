"""Ingestion: walk trees, skip what is unchanged, parse, chunk, embed what is new, store atomically.

The cache key of a file is the SHA-256 of its bytes: an unchanged file costs one read and one hash
and nothing else. The cache key of a chunk is the SHA-256 of its embedded text: a changed file is
re-chunked and only chunks whose text is new anywhere in the store are embedded. A changed file's
old chunks are replaced in the same transaction as its new ones, so a crash (SIGKILL included)
leaves every document either fully old or fully new and a re-run completes the rest.

Every ingestion runs as one tenant: it sees, reuses vectors from, replaces and prunes only that
tenant's documents, and writes new ones as the tenant's (:class:`~sovereign.rag.models.DocumentRecord`).

Documents are written in groups (``flush_chunks`` chunks at a time) so the embedder sees full,
length-sorted batches whatever the file sizes; each group is one store transaction.

Walking: directories are not followed through symlinks; a symlinked file is followed only when its
target is inside the ingested root. Hidden entries and build artefacts (``EXCLUDED_DIRS``) are
skipped, unknown suffixes and binary files (a NUL byte in the first 8 KiB) are counted and skipped,
files that fail to parse are reported with the reason and skipped. Document text is never logged.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sovereign.backends.base import EmbeddingBackend
from sovereign.errors import InvalidRequestError, NotFoundError
from sovereign.observability import metrics
from sovereign.rag.chunking import Chunker, sha256_hex
from sovereign.rag.loaders import file_kind, load_bytes, looks_binary
from sovereign.rag.models import ANONYMOUS, ChunkRecord, DocumentRecord
from sovereign.rag.stores.base import VectorStore, check_collection

log = logging.getLogger("sovereign.rag.ingest")

EXCLUDED_DIRS = frozenset({"_sources", "_static", "_images", "_downloads", "__pycache__", "node_modules"})
Progress = Callable[[str, int], None]  # (event, amount): "files_total", "file", "chunks_embedded"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file to ingest: where its bytes are (``real``) and the path it is known by (``logical``)."""

    real: Path
    logical: str


@dataclass(slots=True)
class IngestReport:
    """What one ingestion did. ``changed`` maps collection -> doc ids added, updated or removed."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    chunks_embedded: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    changed: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "removed": self.removed, "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "skipped": dict(self.skipped), "chunks_embedded": self.chunks_embedded,
                "chunks_reused": self.chunks_reused, "seconds": round(self.seconds, 3)}


def doc_id_for(collection: str, logical_path: str, tenant: str = ANONYMOUS) -> str:
    """Stable document id: first 24 hex digits of SHA-256(collection NUL path) for the anonymous
    tenant (the ids of the release before tenants), of SHA-256(tenant NUL collection NUL path) for
    any other, so two tenants' uploads of one path never share an id. (The two forms cannot
    collide: paths hold no NUL.)"""
    if tenant == ANONYMOUS:
        return sha256_hex(f"{collection}\0{logical_path}")[:24]
    return sha256_hex(f"{tenant}\0{collection}\0{logical_path}")[:24]


def walk(roots: Iterable[Path], exclude: Sequence[str] = (), skipped: Counter[str] | None = None) -> list[SourceFile]:
    """Supported files under ``roots`` (files or directories), sorted, following the rules above.

    Args:
        exclude: extra glob patterns matched against file and directory names.
        skipped: counts of skip reasons are added here (``unknown_type``, ``outside_root``, ...).

    Raises:
        NotFoundError: a root does not exist.
    """
    counts = skipped if skipped is not None else Counter()
    out: list[SourceFile] = []

    def excluded(name: str) -> bool:
        return name.startswith(".") or any(fnmatch.fnmatch(name, pattern) for pattern in exclude)

    def consider(path: Path, root: Path) -> None:
        if excluded(path.name):
            counts["excluded"] += 1
            return
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                counts["outside_root"] += 1
                return
        if file_kind(path) is None:
            counts["unknown_type"] += 1
            return
        out.append(SourceFile(path, str(path)))

    for given in roots:
        root = Path(given).expanduser().absolute()
        if not root.exists():
            raise NotFoundError(f"{given} does not exist.", param="path")
        if root.is_file():
            consider(root, root.parent.resolve())
            continue
        real_root = root.resolve()
        for dirpath, dirnames, filenames in os.walk(real_root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not excluded(d))
            for name in sorted(filenames):
                consider(Path(dirpath) / name, real_root)
    return out


class Ingestor:
    """Turns source files into stored, embedded chunks. One ingestion runs at a time.

    Args:
        store: an opened store. embedder: the embedding model. chunker: the token chunker.
        max_file_bytes: larger files are skipped (``too_large``).
        flush_chunks: chunks gathered before one embed call and one store transaction.
    """

    def __init__(self, store: VectorStore, embedder: EmbeddingBackend, chunker: Chunker, *,
                 max_file_bytes: int = 50 * 1024 * 1024, flush_chunks: int = 512) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.max_file_bytes = max_file_bytes
        self.flush_chunks = flush_chunks
        self._lock = asyncio.Lock()

    async def ingest_paths(
        self, roots: Sequence[Path], collection: str, *, prune: bool = False, exclude: Sequence[str] = (),
        progress: Progress | None = None, tenant: str = ANONYMOUS,
    ) -> IngestReport:
        """Ingest every supported file under ``roots`` into ``tenant``'s ``collection``; ``prune``
        deletes the tenant's documents under those roots whose files are gone. Raises
        InvalidRequestError / NotFoundError on bad input."""
        check_collection(collection)
        report = IngestReport()
        files = await asyncio.to_thread(walk, roots, exclude, report.skipped)
        prefixes = [str(Path(r).expanduser().absolute().resolve()) for r in roots]
        return await self.ingest_files(files, collection, report=report, progress=progress,
                                       prune_prefixes=prefixes if prune else None, tenant=tenant)

    async def ingest_files(
        self, files: Sequence[SourceFile], collection: str, *, report: IngestReport | None = None,
        progress: Progress | None = None, prune_prefixes: Sequence[str] | None = None, tenant: str = ANONYMOUS,
    ) -> IngestReport:
        """Ingest explicit files (uploads use this with logical paths like ``upload/name.md``) as ``tenant``."""
        check_collection(collection)
        report = report or IngestReport()
        began = time.perf_counter()
        async with self._lock:
            known = await self.store.known_documents(collection, tenant=tenant)
            if progress:
                progress("files_total", len(files))
            pending: list[tuple[DocumentRecord, list[ChunkRecord], bool]] = []
            for source in files:
                item = await asyncio.to_thread(self._prepare, source, collection, tenant, known, report)
                if progress:
                    progress("file", 1)
                if item is not None:
                    pending.append(item)
                if sum(len(c) for _, c, _ in pending) >= self.flush_chunks:
                    await self._flush(pending, report, progress)
                    pending = []
            await self._flush(pending, report, progress)
            if prune_prefixes is not None:
                seen = {f.logical for f in files}
                gone = [doc_id for path, (doc_id, _) in known.items() if path not in seen
                        and any(path == p or path.startswith(p.rstrip("/") + "/") for p in prune_prefixes)]
                await self._remove(gone, collection, tenant, report)
            await self.store.flush()
        report.seconds = time.perf_counter() - began
        return report

    async def _remove(self, doc_ids: list[str], collection: str, tenant: str, report: IngestReport) -> None:
        if doc_ids:
            deleted = await self.store.delete_documents(doc_ids, tenant=tenant)
            report.removed += len(deleted)
            report.changed.setdefault(collection, []).extend(d.doc_id for d in deleted)
            metrics.INGEST_FILES.labels(outcome="removed").inc(len(deleted))

    def _prepare(
        self, source: SourceFile, collection: str, tenant: str, known: dict[str, tuple[str, str]],
        report: IngestReport,
    ) -> tuple[DocumentRecord, list[ChunkRecord], bool] | None:
        """Read, hash, parse and chunk one file (worker thread). None when unchanged or skipped."""
        kind = file_kind(source.real)
        try:
            size = source.real.stat().st_size
            if size > self.max_file_bytes:
                return self._skip(report, "too_large")
            data = source.real.read_bytes()
        except OSError as exc:
            return self._fail(report, source, f"unreadable: {exc.strerror or type(exc).__name__}")
        if kind is None:
            return self._skip(report, "unknown_type")
        if kind != "pdf" and looks_binary(data[:8192]):
            return self._skip(report, "binary")
        content_hash = sha256_hex(data)
        previous = known.get(source.logical)
        if previous is not None and previous[1] == content_hash:
            report.unchanged += 1
            metrics.INGEST_FILES.labels(outcome="unchanged").inc()
            return None
        if not data.strip():
            return self._skip(report, "empty")
        try:
            loaded = load_bytes(data, source.real.name, kind)
        except InvalidRequestError as exc:
            return self._fail(report, source, exc.message)
        except Exception as exc:  # a parser bug on one file must not stop the run
            return self._fail(report, source, f"parser error {type(exc).__name__}")
        if loaded.is_empty:
            return self._skip(report, "empty")
        doc_id = doc_id_for(collection, source.logical, tenant)
        chunks = self.chunker.chunk(doc_id, loaded.title, loaded.sections)
        doc = DocumentRecord(doc_id, collection, source.logical, loaded.title, content_hash, size,
                             {**loaded.metadata, "kind": kind}, len(chunks), tenant)
        return doc, chunks, previous is not None

    @staticmethod
    def _skip(report: IngestReport, reason: str) -> None:
        report.skipped[reason] += 1
        metrics.INGEST_FILES.labels(outcome="skipped").inc()
        return None

    @staticmethod
    def _fail(report: IngestReport, source: SourceFile, reason: str) -> None:
        report.failed.append((source.logical, reason))
        metrics.INGEST_FILES.labels(outcome="failed").inc()
        log.warning("ingest: skipped %s: %s", source.logical, reason)
        return None

    async def _flush(
        self, pending: list[tuple[DocumentRecord, list[ChunkRecord], bool]], report: IngestReport,
        progress: Progress | None,
    ) -> None:
        """Embed what is new in ``pending`` (reusing stored vectors by chunk hash) and store it."""
        if not pending:
            return
        titles = {doc.doc_id: doc.title for doc, _, _ in pending}
        all_chunks = [c for _, chunks, _ in pending for c in chunks]
        tenant = pending[0][0].tenant  # one ingestion, one tenant
        vectors = await self.store.vectors_for_hashes([c.content_hash for c in all_chunks], tenant=tenant)
        todo: dict[str, str] = {}
        for chunk in all_chunks:
            if chunk.content_hash not in vectors:
                todo.setdefault(chunk.content_hash, chunk.embed_text(titles[chunk.doc_id]))
        if todo:
            embedded, _tokens = await self.embedder.embed(list(todo.values()))
            vectors.update(zip(todo.keys(), embedded, strict=True))
            if progress:
                progress("chunks_embedded", len(todo))
        report.chunks_embedded += len(todo)
        report.chunks_reused += len(all_chunks) - len(todo)
        items = []
        for doc, chunks, _ in pending:
            matrix = (np.stack([vectors[c.content_hash] for c in chunks]) if chunks
                      else np.zeros((0, self.store.dimensions), dtype=np.float32))
            items.append((doc, chunks, matrix.astype(np.float32, copy=False)))
        await self.store.upsert_documents(items)
        metrics.INGEST_CHUNKS.labels(store=self.store.name).inc(len(all_chunks))
        for doc, _, existed in pending:
            if existed:
                report.updated += 1
            else:
                report.added += 1
            metrics.INGEST_FILES.labels(outcome="updated" if existed else "added").inc()
            report.changed.setdefault(doc.collection, []).append(doc.doc_id)
