"""Retrieval expert: sub-queries in parallel, deduplicate, fuse, optionally rerank, pack.

Fusion is weighted Reciprocal Rank Fusion (Cormack, Clarke & Büttcher, SIGIR 2009) over the
sub-queries' ranked lists: ``score(chunk) = sum_q w_q / (60 + rank_q)``, with weight 1 for the
whole question and 0.5 for its parts, so the whole question's best chunks stay on top and a chunk
found by several sub-queries rises. Packing keeps fused order and skips chunks that do not fit in
the token budget (a later, shorter chunk may still fit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sovereign.agents.state import AgentState, RunContext, past_turns
from sovereign.backends.base import EmbeddingBackend
from sovereign.errors import EngineUnavailableError
from sovereign.observability.tracing import span
from sovereign.rag.models import Retriever, SearchHit


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Span attributes with dotted names (typed for ``span(**...)``)."""
    return values

log = logging.getLogger("sovereign.agents")
RRF_K = 60
PART_WEIGHT = 0.5


async def _search(retriever: Retriever, query: str, index: int, top_k: int, collection: str | None) -> list[SearchHit]:
    with span("agent.retriever.search", **_attrs({"agent.subquery": index, "agent.top_k": top_k})) as current:
        hits = list(await retriever.search(query, top_k=top_k, collection=collection))
        current.set_attribute("agent.hits", len(hits))
    return hits


def fuse(ranked: Sequence[Sequence[SearchHit]]) -> list[SearchHit]:
    """Deduplicate by ``chunk_id`` and order by weighted RRF (list 0 = whole question, weight 1)."""
    scores: dict[str, float] = {}
    first: dict[str, SearchHit] = {}
    for i, hits in enumerate(ranked):
        weight = 1.0 if i == 0 else PART_WEIGHT
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (RRF_K + rank)
            first.setdefault(hit.chunk_id, hit)
    order = sorted(scores, key=lambda cid: -scores[cid])
    return [first[cid] for cid in order]


async def rerank(question: str, hits: list[SearchHit], embedder: EmbeddingBackend) -> tuple[list[SearchHit], int]:
    """Reorder ``hits`` by cosine(question, chunk text) under ``embedder`` (one embed call).
    Returns ``(hits, embedding tokens used)`` (0 when there was nothing to reorder)."""
    if len(hits) < 2:
        return hits, 0
    with span("agent.embed", **_attrs({"agent.purpose": "rerank", "agent.texts": len(hits) + 1})) as current:
        vectors, tokens = await embedder.embed([question] + [h.text for h in hits])
        current.set_attribute("agent.embedding_tokens", tokens)
    sims = vectors[1:] @ vectors[0]
    return [hits[i] for i in np.argsort(-sims, kind="stable")], tokens


def pack(hits: Sequence[SearchHit], budget_tokens: int, count_tokens: Callable[[str], int]) -> list[dict[str, Any]]:
    """Sources numbered from 1: ``SearchHit.source()`` plus ``n``, ``text`` and ``tokens``, in order,
    totalling at most ``budget_tokens`` (chunk tokens as ``count_tokens`` counts them)."""
    sources: list[dict[str, Any]] = []
    used = 0
    for hit in hits:
        tokens = count_tokens(hit.text)
        if used + tokens > budget_tokens:
            continue
        used += tokens
        sources.append({**hit.source(), "n": len(sources) + 1, "text": hit.text, "tokens": tokens})
    return sources


async def search_all(
    subqueries: Sequence[str], retriever: Retriever | None, *, top_k: int, collection: str | None = None
) -> tuple[list[SearchHit], list[str]]:
    """Run the sub-queries concurrently and fuse their hits. Returns ``(fused hits, warnings)``.

    A failing sub-query is dropped with a warning; if every one fails the first error is raised.

    Raises:
        EngineUnavailableError: no retriever (document memory not installed).
        whatever ``retriever.search`` raises, when all sub-queries fail.
    """
    if retriever is None:
        raise EngineUnavailableError("Document memory is not installed: no retriever to search.")
    results = await asyncio.gather(
        *(_search(retriever, q, i, top_k, collection) for i, q in enumerate(subqueries)), return_exceptions=True
    )
    ranked: list[list[SearchHit]] = []
    warnings: list[str] = []
    errors: list[BaseException] = []
    for query, result in zip(subqueries, results, strict=True):
        if isinstance(result, BaseException):
            errors.append(result)
            warnings.append(f"retrieval: sub-query {query[:60]!r} failed ({type(result).__name__})")
        else:
            ranked.append(result)
    if not ranked:
        raise errors[0]
    return fuse(ranked), warnings


async def retrieve(
    subqueries: Sequence[str],
    retriever: Retriever | None,
    *,
    top_k: int,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    collection: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`search_all` then :func:`pack` (no rerank: the simple path). Returns ``(sources, warnings)``.

    Raises:
        the errors of :func:`search_all`.
    """
    hits, warnings = await search_all(subqueries, retriever, top_k=top_k, collection=collection)
    return pack(hits, budget_tokens, count_tokens), warnings


def context_budget(ctx: RunContext, history_tokens: int) -> int:
    """Tokens left for sources: ``agents.context_tokens`` clamped to the model's window minus the
    answer budget, the history and ~200 tokens of instructions."""
    settings = ctx.deps.settings
    answer = ctx.sampling.max_tokens or settings.max_tokens
    window = ctx.deps.model.capabilities.context_window
    return max(0, min(settings.context_tokens, window - answer - history_tokens - 200))


async def run(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """State adapter: sets ``sources`` (appending sub-query warnings) and the rerank's embedding tokens.
    Searches only the run's tenant's documents (:meth:`RunContext.retriever`)."""
    deps = ctx.deps
    history_tokens = sum(deps.count_tokens(t["content"]) for t in past_turns(state))
    subqueries = state.get("subqueries") or [state["question"]]
    hits, warnings = await search_all(subqueries, ctx.retriever(), top_k=deps.settings.top_k,
                                      collection=ctx.collection)
    tokens = 0
    if deps.settings.rerank and deps.embedder is not None:
        hits, tokens = await rerank(subqueries[0], hits, deps.embedder)
    sources = pack(hits, context_budget(ctx, history_tokens), deps.count_tokens)
    return {"sources": sources, "warnings": warnings, "_embedding_tokens": tokens}
