"""One evaluation run: every case of a dataset through an :class:`~sovereign.evaluation.targets.EvalTarget`.

Per case: the hybrid search (``top_k`` = the largest k) scored with hit@1/5/10, reciprocal rank and
nDCG@10 (:mod:`sovereign.evaluation.scoring`); then, unless ``answers`` is off, one answer at
temperature 0, checked by the agent pipeline's validator (each sentence against the sources it cites,
cosine of MiniLM embeddings >= ``agents.support_threshold``; ``sovereign-agent`` reports its own
verdict) and, when the case has a reference answer, exact match and token F1.

Metrics of a run (``EvalResult.metrics``; None when no case could be scored)::

    hit_at_1 hit_at_5 hit_at_10 mrr ndcg_at_10      retrieval, mean over cases with a relevance rule
    grounded_rate                                  answers whose validator verdict passed
    citation_precision                             cited sentences supported by their cited source
    exact_match token_f1                           against reference answers
    search_p50_ms answer_p50_s answer_p95_s ttft_p50_s   latency
    prompt_tokens_mean completion_tokens_mean      tokens per answer

A case whose search or answer fails stops the run (:class:`EvalRunError` naming the line), so a
result is never computed from part of a dataset.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sovereign.agents.nodes.validator import validate
from sovereign.errors import SovereignError
from sovereign.evaluation import scoring
from sovereign.evaluation.dataset import Dataset, DatasetError, EvalCase, describe
from sovereign.evaluation.targets import Answer, EvalTarget

KS, RETRIEVAL_METRICS = scoring.KS, scoring.RETRIEVAL_METRICS


class EvalRunError(SovereignError):
    """A run that could not finish (a case's search or answer failed); nothing is logged for it."""


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """What a run asks: the ``model`` that answers (a case may name its own), an optional pinned
    ``deployment``, the ``collection`` searched (None = all), whether to generate ``answers``,
    ``max_tokens`` per answer, the validator's ``support_threshold`` (cosine, 0..1)."""

    model: str
    deployment: str | None = None
    collection: str | None = None
    answers: bool = True
    max_tokens: int = 256
    support_threshold: float = 0.45

    def params(self) -> dict[str, Any]:
        return {"model": self.model, "deployment": self.deployment or "", "collection": self.collection or "",
                "answers": self.answers, "max_tokens": self.max_tokens, "support_threshold": self.support_threshold}


@dataclass(slots=True)
class EvalResult:
    """A finished run: ``metrics`` (module docstring), per-case rows, the run's params, the dataset's
    identity (path, SHA-256) and the corpus's (documents, SHA-256); ``duration_s`` wall seconds."""

    metrics: dict[str, float | None]
    cases: list[dict[str, Any]]
    params: dict[str, Any]
    dataset: dict[str, Any]
    corpus: dict[str, Any]
    started_at: str
    duration_s: float
    engine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"object": "eval.result", "metrics": self.metrics, "params": self.params, "dataset": self.dataset,
                "corpus": self.corpus, "engine": self.engine, "started_at": self.started_at,
                "duration_s": round(self.duration_s, 3), "cases": self.cases}


class _TargetEmbedder:
    """The target's embeddings as the validator's :class:`~sovereign.backends.base.EmbeddingBackend`."""

    def __init__(self, target: EvalTarget) -> None:
        self.name = "eval-target"
        self.dimensions = 0  # unknown until the first call; the validator does not read it
        self.target = target

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        return await self.target.embed(texts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def close(self) -> None:
        return None


async def check_models(dataset: Dataset, config: EvalConfig, target: EvalTarget) -> None:
    """Raises DatasetError (``FILE:LINE``) for a case naming a model the gateway does not serve, or
    for the run's own model."""
    served = await target.served_models()
    if config.answers and config.model not in served:
        raise DatasetError(f"{dataset.path}: model {config.model!r} is not served by the gateway "
                           f"(served: {', '.join(sorted(served))}).")
    for case in dataset.cases:
        if case.model is not None and case.model not in served:
            raise DatasetError(f"{dataset.path}:{case.line}: model {case.model!r} is not served by the gateway "
                               f"(served: {', '.join(sorted(served))}).")


def _sources_for(answer: Answer, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Numbered sources with text for the validator: the pipeline's cited sources (texts from the
    search hits of the same question), or the top 5 hits for a model that has none."""
    if not answer.sources:
        return [{"n": i, "text": h["text"]} for i, h in enumerate(hits[:5], 1)]
    texts = {h["chunk_id"]: h["text"] for h in hits}
    return [{"n": s.get("n", i), "text": texts[s["chunk_id"]]}
            for i, s in enumerate(answer.sources, 1) if s.get("chunk_id") in texts]


async def _score_answer(case: EvalCase, answer: Answer, hits: list[dict[str, Any]], target: EvalTarget,
                        threshold: float) -> dict[str, Any]:
    verdict = answer.metadata.get("validator")
    if not isinstance(verdict, dict):
        verdict, _ = await validate(answer.text, _sources_for(answer, hits), _TargetEmbedder(target), threshold)
    cited, supported = scoring.citation_counts(verdict.get("sentences", []))
    row: dict[str, Any] = {
        "answer": answer.text, "finish_reason": answer.finish_reason, "grounded": verdict.get("status") == "passed",
        "cited_sentences": cited, "supported_citations": supported, "latency_s": round(answer.latency_s, 4),
        "ttft_s": None if answer.ttft_s is None else round(answer.ttft_s, 4),
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
    }
    if case.answer is not None:
        row["exact_match"] = scoring.exact_match(answer.text, case.answer)
        row["token_f1"] = round(scoring.token_f1(answer.text, case.answer), 4)
    return row


async def _run_case(case: EvalCase, config: EvalConfig, target: EvalTarget) -> dict[str, Any]:
    row: dict[str, Any] = {"line": case.line, "id": case.id, "question": case.question}
    began = time.perf_counter()
    hits = await target.search(case.question, top_k=max(KS), collection=case.collection or config.collection)
    row["search_ms"] = round((time.perf_counter() - began) * 1000, 3)
    if case.answer is not None or case.pages:
        key = scoring.answer_key(case.answer) if case.answer else None
        relevance = [scoring.relevant(h["text"], h["path"], key=key, pages=case.pages) for h in hits]
        rank = scoring.first_rank(relevance)
        row.update({"rank": rank, "first_hit": hits[rank - 1]["path"] if rank else None,
                    "mrr": scoring.reciprocal_rank(rank), "ndcg_at_10": round(scoring.ndcg_at(relevance, 10), 4),
                    **{f"hit_at_{k}": scoring.hit_at(rank, k) for k in KS}})
    if config.answers:
        answer = await target.answer(case.question, model=case.model or config.model, deployment=config.deployment,
                                     max_tokens=config.max_tokens)
        row.update(await _score_answer(case, answer, hits, target, config.support_threshold))
    return row


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return round(statistics.fmean(values), 4) if values else None


def aggregate(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Run metrics (module docstring) from per-case rows."""
    metrics: dict[str, float | None] = {k: _mean(rows, k) for k in RETRIEVAL_METRICS}
    answered = [r for r in rows if "grounded" in r]
    metrics["grounded_rate"] = _mean([{**r, "grounded": float(r["grounded"])} for r in answered], "grounded")
    cited = sum(r["cited_sentences"] for r in answered)
    metrics["citation_precision"] = round(sum(r["supported_citations"] for r in answered) / cited, 4) if cited else None
    metrics["exact_match"] = _mean(rows, "exact_match")
    metrics["token_f1"] = _mean(rows, "token_f1")

    def quantile(key: str, q: float, scale: float = 1.0) -> float | None:
        value = scoring.percentile([float(r[key]) for r in rows if r.get(key) is not None], q)
        return None if value is None else round(value * scale, 4)

    metrics.update({"search_p50_ms": quantile("search_ms", 0.5), "answer_p50_s": quantile("latency_s", 0.5),
                    "answer_p95_s": quantile("latency_s", 0.95), "ttft_p50_s": quantile("ttft_s", 0.5),
                    "prompt_tokens_mean": _mean(answered, "prompt_tokens"),
                    "completion_tokens_mean": _mean(answered, "completion_tokens"),
                    "cases": float(len(rows))})
    return metrics


async def run_eval(dataset: Dataset, config: EvalConfig, target: EvalTarget,
                   progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Evaluate every case; ``progress(done, total)`` after each.

    Raises:
        DatasetError: a model the gateway does not serve (file and line).
        EvalRunError: a case's search or answer failed (line and the gateway's message).
    """
    await check_models(dataset, config, target)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    began = time.perf_counter()
    corpus = await target.corpus(config.collection)
    engine = await target.model_info(config.model) if config.answers else {}
    rows: list[dict[str, Any]] = []
    for i, case in enumerate(dataset.cases, 1):
        try:
            rows.append(await _run_case(case, config, target))
        except SovereignError as exc:
            raise EvalRunError(f"{dataset.path}:{case.line}: {exc.message}") from exc
        if progress is not None:
            progress(i, len(dataset.cases))
    return EvalResult(metrics=aggregate(rows), cases=rows, params=config.params(), dataset=describe(dataset),
                      corpus=corpus, started_at=started, duration_s=time.perf_counter() - began, engine=engine)
