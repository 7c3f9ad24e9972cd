"""Hybrid retrieval: BM25 (full text) and vector candidates fused with Reciprocal Rank Fusion.

RRF (Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
rank learning methods", SIGIR 2009): ``score(d) = sum over lists L of 1 / (k + rank_L(d))`` with
1-based ranks and ``k = 60``. It needs no score calibration between BM25 and cosine, which is why
it is used here. Ties are broken by the better single rank, then by chunk id (deterministic).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from sovereign.backends.base import EmbeddingBackend
from sovereign.errors import InvalidRequestError, NotFoundError
from sovereign.observability import metrics
from sovereign.observability.drift import RECORDER as DRIFT
from sovereign.observability.tracing import span
from sovereign.rag.models import ANONYMOUS, SearchHit
from sovereign.rag.stores.base import Ranked, VectorStore, check_collection

MAX_QUERY_CHARS = 4000


def rrf_fuse(lists: Sequence[Ranked], k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked lists of ``(chunk_id, score)`` (best first) into ``(chunk_id, rrf score)``, best first.

    Args:
        lists: each list ranked best first; its own scores are ignored (only ranks matter).
        k: the RRF constant (60 in Cormack et al. 2009).
    """
    scores: dict[str, float] = {}
    best_rank: dict[str, int] = {}
    for ranked in lists:
        for rank, (chunk_id, _score) in enumerate(ranked, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
            best_rank[chunk_id] = min(rank, best_rank.get(chunk_id, rank))
    return sorted(scores.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], kv[0]))


MAX_TOP_K = 100


def check_top_k(top_k: object) -> None:
    """Raises InvalidRequestError unless ``top_k`` is an int in 1..:data:`MAX_TOP_K`."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequestError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k!r}.", param="top_k")


class HybridRetriever:
    """Implements :class:`~sovereign.rag.models.Retriever` over one tenant's documents in one store
    and one embedder, and :class:`~sovereign.rag.models.TenantScoping` (:meth:`for_tenant`).

    Args:
        store: an opened :class:`VectorStore`.
        embedder: the model that embedded the chunks (query vectors must live in the same space).
        tenant: whose documents are searched (default: the anonymous, single-user tenant).
        rrf_k: RRF constant. candidates: how many each side contributes before fusion.
    """

    def __init__(self, store: VectorStore, embedder: EmbeddingBackend, *, tenant: str = ANONYMOUS,
                 rrf_k: int = 60, candidates: int = 50) -> None:
        self.store = store
        self.embedder = embedder
        self.tenant = tenant
        self.rrf_k = rrf_k
        self.candidates = candidates

    def for_tenant(self, tenant: str) -> HybridRetriever:
        """The same search over ``tenant``'s documents (a new, cheap object; this one is unchanged)."""
        if tenant == self.tenant:
            return self
        return HybridRetriever(self.store, self.embedder, tenant=tenant, rrf_k=self.rrf_k, candidates=self.candidates)

    async def shared_version(self, collection: str) -> int:
        """Sum of every tenant's version of ``collection`` (changes whenever any of them changes)."""
        return await self.store.index_version(collection, tenant=None)

    async def check(self, query: str, top_k: int, collection: str | None) -> None:
        """Validate a search request.

        Raises:
            InvalidRequestError: empty or over-long query, ``top_k`` not in 1..100, bad collection name.
            NotFoundError: the tenant has no such collection (another tenant's is unknown too).
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("The query is empty: send some words to search for.", param="query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequestError(f"The query is longer than {MAX_QUERY_CHARS} characters.", param="query")
        check_top_k(top_k)
        if collection is not None:
            check_collection(collection)
            if collection not in await self.store.collections(tenant=self.tenant):
                raise NotFoundError(
                    f"Unknown collection {collection!r}; ingest documents into it first.", param="collection"
                )

    async def search(
        self, query: str, *, top_k: int, collection: str | None = None, path_glob: str | None = None
    ) -> Sequence[SearchHit]:
        """Best ``top_k`` of the tenant's chunks for ``query`` by RRF of BM25 and vector ranks
        (``collection`` None: all the tenant's collections).

        Each hit's ``metadata`` carries ``bm25_rank`` / ``vector_rank`` (1-based, absent when the
        chunk was not in that list) and ``collection``. Raises as :meth:`check`.
        """
        await self.check(query, top_k, collection)
        began = time.perf_counter()
        with span("rag.search", top_k=top_k, store=self.store.name):
            depth = max(self.candidates, top_k)
            vectors, _ = await self.embedder.embed([query])
            keyword = await self.store.keyword_search(query, depth, collection=collection, path_glob=path_glob,
                                                      tenant=self.tenant)
            semantic = await self.store.vector_search(vectors[0], depth, collection=collection, path_glob=path_glob,
                                                      tenant=self.tenant)
            fused = rrf_fuse([keyword, semantic], self.rrf_k)[:top_k]
            rows = await self.store.fetch_hits([cid for cid, _ in fused], tenant=self.tenant)
        metrics.RETRIEVAL_DURATION.labels(store=self.store.name).observe(time.perf_counter() - began)
        DRIFT.observe_query_vector(vectors[0])
        if semantic:
            DRIFT.record_number("retrieval_score", semantic[0][1])
        bm25_rank = {cid: i for i, (cid, _) in enumerate(keyword, 1)}
        vector_rank = {cid: i for i, (cid, _) in enumerate(semantic, 1)}
        hits: list[SearchHit] = []
        for cid, score in fused:
            row = rows.get(cid)
            if row is None:  # deleted between the two queries
                continue
            extra = {"bm25_rank": bm25_rank.get(cid), "vector_rank": vector_rank.get(cid)}
            meta = {**row.metadata, **{k: v for k, v in extra.items() if v is not None}}
            hits.append(replace(row, score=score, metadata=meta))
        DRIFT.record_category("collection", str(hits[0].metadata.get("collection")) if hits else None)
        return hits

    async def index_version(self, collection: str) -> int:
        """The store's change counter for the tenant's ``collection`` (0 when unknown)."""
        return await self.store.index_version(collection, tenant=self.tenant)
