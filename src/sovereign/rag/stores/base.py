"""The vector-store Protocol every document store implements, and what is shared by all of them.

A store keeps documents, their chunks (text + metadata), one float32 vector per chunk and a
full-text index, per *collection*. It answers three kinds of questions: keyword (BM25-like) and
vector (cosine) candidate lists for hybrid search, chunk rows for a list of ids, and ingestion
bookkeeping (which files are known with which content hash; which chunk hashes already have a
vector). Writes are per document and atomic: after a crash a document is either fully old or fully new.

Implementations: :mod:`sovereign.rag.stores.embedded` (SQLite + FTS5 + usearch, the default) and
:mod:`sovereign.rag.stores.pgvector` (PostgreSQL + pgvector). Both pass
:class:`sovereign.testing.vector_store_contract.VectorStoreContract`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from sovereign.errors import InvalidRequestError
from sovereign.rag.models import ChunkRecord, DocumentRecord, SearchHit

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WORD = re.compile(r"\w+", re.UNICODE)

# (chunk_id, score) ranked best first; score is BM25-like relevance or cosine similarity
Ranked = list[tuple[str, float]]


def check_collection(name: str) -> str:
    """Return ``name`` if it is a valid collection name (1-64 of ``A-Za-z0-9_.-``, not leading ``.-_``).

    Raises:
        InvalidRequestError: anything else (names become file names and SQL values).
    """
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise InvalidRequestError(
            f"Invalid collection name {name!r}: use 1-64 letters, digits, '_', '.' or '-'.", param="collection"
        )
    return name


# Lucene's English stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET) plus the interrogatives and
# auxiliaries questions start with. BM25 gives them almost no weight anyway, but their posting
# lists are huge: "what does ... do with its ..." cost 45-60 ms of FTS5 ranking on the 17,941
# chunks of the Python docs, 3-5 ms without them (bench/rag_bench.py).
_STOPWORD_TEXT = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with what which who whom whose when where why how do does did can could "
    "should would may might must shall i me my we our you your its"
)
QUERY_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def query_terms(query: str, limit: int = 32) -> list[str]:
    """Lowercased word tokens of a free-text query (at most ``limit``), for the full-text side.

    Stop words (:data:`QUERY_STOPWORDS`) are dropped unless the query has nothing else. Operators
    and punctuation are dropped so user text can never be parsed as FTS query syntax.
    """
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    content = [w for w in seen if w not in QUERY_STOPWORDS]
    return (content or list(seen))[:limit]


@runtime_checkable
class VectorStore(Protocol):
    """A document store with keyword and vector search. All methods are coroutines.

    ``collection=None`` in a search means every collection. ``path_glob`` filters on the document
    path with shell-style wildcards (``*`` matches across ``/``). Errors: StorageError for backend
    failures, NotFoundError for a named collection or document that does not exist.
    """

    name: str  # "embedded" or "pgvector" (the ``store`` label of metrics)
    dimensions: int

    async def open(self) -> None:
        """Create or migrate the schema and make the ANN index consistent with stored vectors."""

    async def close(self) -> None:
        """Persist what must be persisted and release connections, threads and files."""

    async def flush(self) -> None:
        """Persist derived state (e.g. the ANN index file) so the next open needs no catch-up."""

    async def collections(self) -> dict[str, int]:
        """Collection name -> number of documents."""

    async def index_version(self, collection: str) -> int:
        """Counter bumped by every write to ``collection``; 0 for an empty or unknown collection."""

    async def known_documents(self, collection: str) -> dict[str, tuple[str, str]]:
        """``path -> (doc_id, content_hash)`` of every document in ``collection``."""

    async def vectors_for_hashes(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors (float32 [dimensions]) of chunks whose embedded-text hash is in ``hashes``."""

    async def upsert_documents(
        self, items: Sequence[tuple[DocumentRecord, Sequence[ChunkRecord], np.ndarray]]
    ) -> None:
        """Insert or replace documents with their chunks and vectors (float32 [len(chunks), dims]).

        One transaction for the whole batch: it is stored completely or not at all.
        """

    async def delete_documents(self, doc_ids: Sequence[str]) -> list[DocumentRecord]:
        """Delete documents and their chunks; returns the deleted ones (unknown ids are ignored)."""

    async def get_document(self, doc_id: str) -> DocumentRecord:
        """One document. Raises NotFoundError."""

    async def list_documents(
        self, collection: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[DocumentRecord]:
        """Documents ordered by path."""

    async def keyword_search(
        self, query: str, k: int, *, collection: str | None = None, path_glob: str | None = None
    ) -> Ranked:
        """Best ``k`` chunks by full-text relevance (higher score is better)."""

    async def vector_search(
        self, vector: np.ndarray, k: int, *, collection: str | None = None, path_glob: str | None = None
    ) -> Ranked:
        """Approximate nearest ``k`` chunks by cosine similarity to ``vector`` (float32 [dims])."""

    async def fetch_hits(self, chunk_ids: Sequence[str]) -> dict[str, SearchHit]:
        """Chunk rows as hits (score 0) keyed by chunk id; unknown ids are absent."""

    def iter_documents(
        self, collection: str
    ) -> AsyncIterator[tuple[DocumentRecord, list[ChunkRecord], np.ndarray]]:
        """Every document of ``collection`` with its chunks and vectors (store migration)."""
