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
