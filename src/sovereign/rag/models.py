"""Document-memory domain types shared with the cache and agent rooms.

A *document* is one source file (identified by its path within a collection); a *chunk* is a
token window of it; a search returns :class:`SearchHit` rows ranked best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    """Hybrid search over one store (what the agent pipeline and the RAG chain call)."""

    async def search(
        self, query: str, *, top_k: int, collection: str | None = None, path_glob: str | None = None
    ) -> Sequence[SearchHit]:
        """Best ``top_k`` chunks for ``query``. Raises InvalidRequestError / NotFoundError on bad input."""

    async def index_version(self, collection: str) -> int:
        """A number that changes whenever the collection's content changes (cache scope key)."""


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """One ingested source file (or upload) in a collection.

    ``doc_id`` is stable for ``(collection, path)`` so re-ingesting a changed file replaces it;
    ``content_hash`` is the SHA-256 (hex) of the file's bytes, the ingestion cache key.
    """

    doc_id: str
    collection: str
    path: str
    title: str
    content_hash: str
    size: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    chunk_count: int = 0

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
