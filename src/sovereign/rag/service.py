"""The document-memory service: one object holding the store, retriever and ingestor.

What the server (``AppState.rag``), the CLI and the agent pipeline use. Other rooms
subscribe to content changes through :attr:`RagService.on_change` (the response cache evicts
answers that cited a changed document): each callback receives ``(doc_ids, collection)`` after
every ingestion or deletion that changed something (document ids are unique across tenants).

Every operation runs as one tenant (keyword ``tenant``, default the anonymous single-user tenant):
:meth:`RagService.retriever_for` searches one tenant's documents, ingestion and deletion touch only
the tenant's own (see :class:`~sovereign.rag.stores.base.VectorStore`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sovereign.backends.base import EmbeddingBackend
from sovereign.config import Settings
from sovereign.errors import NotFoundError
from sovereign.rag.chunking import Chunker, OffsetTokenizing, minilm_tokenizer
from sovereign.rag.ingest import Ingestor, IngestReport, Progress, SourceFile
from sovereign.rag.models import ANONYMOUS, DocumentRecord
from sovereign.rag.retrieve import HybridRetriever
from sovereign.rag.stores import build_store
from sovereign.rag.stores.base import VectorStore

log = logging.getLogger("sovereign.rag")
ChangeCallback = Callable[[list[str], str], Awaitable[None] | None]


def build_embedder(settings: Settings) -> EmbeddingBackend:
    """The configured embedding model (embedded MiniLM or a remote engine with its own httpx client)."""
    if settings.embeddings.runtime == "remote":
        import httpx

        from sovereign.rag.embeddings import RemoteEmbedder

        return RemoteEmbedder(settings.embeddings, httpx.AsyncClient(timeout=60.0))
    from sovereign.rag.embeddings import OnnxMiniLMEmbedder

    return OnnxMiniLMEmbedder(settings.embeddings)


class RagService:
    """Store + retriever + ingestor for one configuration.

    Attributes:
        retriever: a :class:`~sovereign.rag.models.Retriever` (hybrid search) over the anonymous
            tenant's documents; :meth:`retriever_for` gives another tenant's.
        on_change: callbacks ``(doc_ids, collection)`` run after content changes (sync or async).
    """

    def __init__(self, settings: Settings, store: VectorStore, embedder: EmbeddingBackend) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        tokenize = embedder.tokenize if isinstance(embedder, OffsetTokenizing) else minilm_tokenizer()
        self.chunker = Chunker(tokenize, settings.rag.chunk_tokens, settings.rag.chunk_overlap)
        self.ingestor = Ingestor(store, embedder, self.chunker, max_file_bytes=settings.rag.max_file_bytes,
                                flush_chunks=settings.rag.ingest_batch_chunks)
        self.retriever = HybridRetriever(store, embedder, rrf_k=settings.rag.rrf_k,
                                         candidates=settings.rag.candidates)
        self.on_change: list[ChangeCallback] = []
        self._owns_embedder = False

    @classmethod
    async def open(cls, settings: Settings, *, embedder: EmbeddingBackend | None = None,
                   store: VectorStore | None = None) -> RagService:
        """Build and open the configured store (``rag.store``). Raises StorageError / ConfigError."""
        owned = embedder is None
        embedder = embedder or build_embedder(settings)
        store = store or build_store(settings, dimensions=embedder.dimensions)
        await store.open()
        service = cls(settings, store, embedder)
        service._owns_embedder = owned
        return service

    async def close(self) -> None:
        """Close the store, and the embedder's client / thread when this service built it."""
        try:
            await self.store.close()
        finally:
            if self._owns_embedder:
                await self.embedder.close()

    def retriever_for(self, tenant: str) -> HybridRetriever:
        """Hybrid search over ``tenant``'s documents only."""
        return self.retriever.for_tenant(tenant)

    @property
    def default_collection(self) -> str:
        return self.settings.rag.default_collection

    async def _notify(self, report_changed: dict[str, list[str]]) -> None:
        for collection, doc_ids in report_changed.items():
            if not doc_ids:
                continue
            for callback in list(self.on_change):
                try:
                    result = callback(list(doc_ids), collection)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # a subscriber's failure must not fail the ingestion
                    log.exception("rag on_change callback failed")

    async def ingest_paths(self, roots: Sequence[Path], collection: str | None = None, *, prune: bool = False,
                           exclude: Sequence[str] = (), progress: Progress | None = None,
                           tenant: str = ANONYMOUS) -> IngestReport:
        """Ingest trees or files into ``tenant``'s ``collection`` (default ``rag.default_collection``)."""
        report = await self.ingestor.ingest_paths(roots, collection or self.default_collection, prune=prune,
                                                  exclude=exclude, progress=progress, tenant=tenant)
        await self._notify(report.changed)
        return report

    async def ingest_files(self, files: Sequence[SourceFile], collection: str | None = None, *,
                           tenant: str = ANONYMOUS) -> IngestReport:
        """Ingest explicit files (uploads) into ``tenant``'s ``collection``."""
        report = await self.ingestor.ingest_files(files, collection or self.default_collection, tenant=tenant)
        await self._notify(report.changed)
        return report

    async def delete_document(self, doc_id: str, *, tenant: str = ANONYMOUS) -> DocumentRecord:
        """Delete one of ``tenant``'s documents. Raises NotFoundError (another tenant's id included)."""
        deleted = await self.store.delete_documents([doc_id], tenant=tenant)
        if not deleted:
            raise NotFoundError(f"No document with id {doc_id!r}.", param="id")
        await self.store.flush()
        await self._notify({deleted[0].collection: [doc_id]})
        return deleted[0]

    async def stats(self, *, tenant: str = ANONYMOUS) -> dict[str, Any]:
        """The store kind and ``tenant``'s collections with their document counts."""
        return {"store": self.store.name, "collections": await self.store.collections(tenant=tenant)}
