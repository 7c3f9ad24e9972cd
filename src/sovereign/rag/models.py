"""Document-memory domain types shared with the cache and agent rooms.

A *document* is one source file (identified by its path within a collection); a *chunk* is a
token window of it; a search returns :class:`SearchHit` rows ranked best first.

Tenancy: every collection belongs to one *tenant*, the opaque caller identity of
:func:`sovereign.server.state.tenant_of` (:data:`ANONYMOUS` when no API keys are configured, and for
every row written before tenants existed). Two tenants may each own a collection of the same name;
neither sees the other's. A :class:`Retriever` reads one tenant's documents; one that can be
re-bound to another tenant implements :class:`TenantScoping` (see :func:`scoped`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sovereign.errors import PermissionDeniedError

ANONYMOUS = "anonymous"
"""The tenant of a gateway without API keys, of the CLI by default, and of rows from before tenants."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One retrieved chunk. ``score`` is the fused (RRF) score for hybrid search, higher is better."""

    chunk_id: str
    doc_id: str
    path: str
    title: str
    text: str
    score: float
    heading: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def source(self) -> dict[str, Any]:
        """The citation record exposed to clients in ``sovereign.sources``."""
        return {"chunk_id": self.chunk_id, "doc_id": self.doc_id, "path": self.path,
                "title": self.title, "heading": self.heading, "score": round(self.score, 6)}


class Retriever(Protocol):
    """Hybrid search over one tenant's documents in one store (what the agent pipeline and the RAG
    chain call)."""

    async def search(
        self, query: str, *, top_k: int, collection: str | None = None, path_glob: str | None = None
    ) -> Sequence[SearchHit]:
        """Best ``top_k`` chunks for ``query``. Raises InvalidRequestError / NotFoundError on bad input."""

    async def index_version(self, collection: str) -> int:
        """A number that changes whenever the collection's content changes (cache scope key)."""


@runtime_checkable
class TenantScoping(Protocol):
    """Optional: a retriever that can be bound to another tenant (the gateway's retriever is)."""

    def for_tenant(self, tenant: str) -> Retriever:
        """The same search over ``tenant``'s documents only."""

    async def shared_version(self, collection: str) -> int:
        """A number that changes whenever any tenant's collection named ``collection`` changes
        (a cache scope for a caller whose tenant is not known; 0 when none exists)."""


def scoped(retriever: Retriever, tenant: str | None) -> Retriever:
    """``retriever`` restricted to ``tenant``'s documents.

    ``tenant`` None (a request built in-process, e.g. by the CLI) keeps ``retriever`` as bound.
    A retriever without :class:`TenantScoping` serves only :data:`ANONYMOUS` (the single-user
    install); for any other tenant it is refused rather than allowed to read unscoped documents.

    Raises:
        PermissionDeniedError: ``retriever`` cannot be scoped and ``tenant`` is not anonymous.
    """
    if tenant is None:
        return retriever
    if isinstance(retriever, TenantScoping):
        return retriever.for_tenant(tenant)
    if tenant == ANONYMOUS:
        return retriever
    raise PermissionDeniedError(
        f"The document retriever {type(retriever).__name__} cannot restrict search to one tenant, so "
        "it serves only the anonymous (no API key) tenant; implement TenantScoping.for_tenant to use it with keys.")


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """One ingested source file (or upload) in a collection.

    ``doc_id`` is stable for ``(tenant, collection, path)`` so re-ingesting a changed file replaces it;
    ``content_hash`` is the SHA-256 (hex) of the file's bytes, the ingestion cache key. ``tenant``
    owns the document (and its collection); it is not part of :meth:`to_dict` (callers see their own).
    """

    doc_id: str
    collection: str
    path: str
    title: str
    content_hash: str
    size: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    chunk_count: int = 0
    tenant: str = ANONYMOUS

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.doc_id, "collection": self.collection, "path": self.path, "title": self.title,
                "content_hash": self.content_hash, "size": self.size, "chunks": self.chunk_count,
                "metadata": self.metadata}


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One token window of a document, ready to store.

    ``content_hash`` is the SHA-256 (hex) of the exact text that was embedded (title, heading and
    body), so an identical chunk anywhere in the store reuses its vector instead of re-embedding.
    ``token_count`` counts body tokens under the embedding model's tokenizer.
    """

    chunk_id: str
    doc_id: str
    ordinal: int
    heading: str
    text: str
    content_hash: str
    token_count: int

    def embed_text(self, title: str) -> str:
        """What the embedder sees: title and heading give the window its context."""
        head = " / ".join(p for p in (title, "" if self.heading == title else self.heading) if p)
        return f"{head}\n{self.text}" if head else self.text
