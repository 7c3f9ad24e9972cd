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

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from sovereign.errors import InvalidRequestError
from sovereign.rag.models import ANONYMOUS, ChunkRecord, DocumentRecord, SearchHit

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_WORD = re.compile(r"\w+", re.UNICODE)

# (chunk_id, score) ranked best first; score is BM25-like relevance or cosine similarity
Ranked = list[tuple[str, float]]


def tenant_tag(tenant: str) -> str:
    """16 hex digits naming ``tenant`` in file names (SHA-256 prefix: tenant ids are opaque strings,
    possibly with characters no file name may hold)."""
    return hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
    """A document store with keyword and vector search, partitioned by tenant. All methods are coroutines.

    Every read and delete takes ``tenant`` (keyword; default :data:`~sovereign.rag.models.ANONYMOUS`,
    the single-user install) and sees only that tenant's collections, documents and chunks: another
    tenant's document id is "unknown" (NotFoundError / ignored), never "forbidden", so its existence
    is not revealed. Writes take the tenant of each :class:`DocumentRecord`. Collection names are
    per tenant: two tenants may each have a collection ``docs``.

    ``collection=None`` in a search means every collection of the tenant. ``path_glob`` filters on
    the document path with shell-style wildcards (``*`` matches across ``/``). Errors: StorageError
    for backend failures, NotFoundError for a named collection or document that does not exist.
    """

    name: str  # "embedded" or "pgvector" (the ``store`` label of metrics)
    dimensions: int

    async def open(self) -> None:
        """Create or migrate the schema and make the ANN index consistent with stored vectors."""

    async def close(self) -> None:
        """Persist what must be persisted and release connections, threads and files."""

    async def flush(self) -> None:
        """Persist derived state (e.g. the ANN index file) so the next open needs no catch-up."""

    async def collections(self, *, tenant: str = ANONYMOUS) -> dict[str, int]:
        """``tenant``'s collection names -> number of documents."""

    async def index_version(self, collection: str, *, tenant: str | None = ANONYMOUS) -> int:
        """Counter bumped by every write to ``tenant``'s ``collection``; 0 for an empty or unknown one.

        ``tenant=None``: the sum over every tenant's collection of that name (changes whenever any
        of them changes; a cache scope when the caller's tenant is not known).
        """

    async def known_documents(self, collection: str, *, tenant: str = ANONYMOUS) -> dict[str, tuple[str, str]]:
        """``path -> (doc_id, content_hash)`` of every document in ``tenant``'s ``collection``."""

    async def vectors_for_hashes(self, hashes: Sequence[str], *, tenant: str = ANONYMOUS) -> dict[str, np.ndarray]:
        """Stored vectors (float32 [dimensions]) of ``tenant``'s chunks whose embedded-text hash is in
        ``hashes`` (never another tenant's: reuse would tell a tenant which texts others hold)."""

    async def upsert_documents(
        self, items: Sequence[tuple[DocumentRecord, Sequence[ChunkRecord], np.ndarray]]
    ) -> None:
        """Insert or replace documents (each in its ``DocumentRecord.tenant``) with their chunks and
        vectors (float32 [len(chunks), dims]).

        One transaction for the whole batch: it is stored completely or not at all. Raises
        StorageError when a ``doc_id`` is already used by another tenant.
        """

    async def delete_documents(self, doc_ids: Sequence[str], *, tenant: str = ANONYMOUS) -> list[DocumentRecord]:
        """Delete ``tenant``'s documents and their chunks; returns the deleted ones (unknown ids and
        other tenants' ids are ignored)."""

    async def get_document(self, doc_id: str, *, tenant: str = ANONYMOUS) -> DocumentRecord:
        """One of ``tenant``'s documents. Raises NotFoundError (also for another tenant's id)."""

    async def list_documents(
        self, collection: str | None = None, *, limit: int = 100, offset: int = 0, tenant: str = ANONYMOUS
    ) -> list[DocumentRecord]:
        """``tenant``'s documents ordered by collection and path."""

    async def keyword_search(
        self, query: str, k: int, *, collection: str | None = None, path_glob: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> Ranked:
        """Best ``k`` of ``tenant``'s chunks by full-text relevance (higher score is better)."""

    async def vector_search(
        self, vector: np.ndarray, k: int, *, collection: str | None = None, path_glob: str | None = None,
        tenant: str = ANONYMOUS,
    ) -> Ranked:
        """Approximate nearest ``k`` of ``tenant``'s chunks by cosine similarity to ``vector`` (float32 [dims])."""

    async def fetch_hits(self, chunk_ids: Sequence[str], *, tenant: str = ANONYMOUS) -> dict[str, SearchHit]:
        """``tenant``'s chunk rows as hits (score 0) keyed by chunk id; unknown ids are absent."""

    def iter_documents(
        self, collection: str, *, tenant: str = ANONYMOUS
    ) -> AsyncIterator[tuple[DocumentRecord, list[ChunkRecord], np.ndarray]]:
        """Every document of ``tenant``'s ``collection`` with its chunks and vectors (store migration)."""
