"""Metric formulas: retrieval (hit@k, reciprocal rank, nDCG@k) and answers (exact match, token F1,
citation precision). Pure functions over plain values.

Relevance of a retrieved chunk (:func:`relevant`): when the case has a reference answer, the chunk
must contain the answer's first 8 normalized words in order (lowercase alphanumeric tokens; the rule
of ``../shared/eval/README.md``); otherwise its path must end with one of the case's pages.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"[a-z0-9]+")
KEY_WORDS = 8
KS = (1, 5, 10)
RETRIEVAL_METRICS = ("hit_at_1", "hit_at_5", "hit_at_10", "mrr", "ndcg_at_10")
ANSWER_METRICS = ("grounded_rate", "citation_precision", "exact_match", "token_f1")
LATENCY_METRICS = ("search_p50_ms", "answer_p50_s", "answer_p95_s", "ttft_p50_s",
                   "prompt_tokens_mean", "completion_tokens_mean", "cases")
METRICS = (*RETRIEVAL_METRICS, *ANSWER_METRICS, *LATENCY_METRICS)


def normalized_words(text: str) -> list[str]:
    """Lowercase alphanumeric tokens of ``text``."""
    return _TOKEN.findall(text.lower())


def answer_key(answer: str, words: int = KEY_WORDS) -> str:
    """The first ``words`` normalized words of ``answer``, space-joined (the relevance key)."""
    return " ".join(normalized_words(answer)[:words])


def relevant(text: str, path: str, *, key: str | None, pages: Sequence[str]) -> bool:
    """Whether a chunk (``text`` at ``path``) answers the case: it contains ``key`` (when the case
    has an answer) or ``path`` ends with one of ``pages``."""
    if key:
        return f" {key} " in f" {' '.join(normalized_words(text))} "
    clean = path.replace("\\", "/")
    return any(clean == p or clean.endswith("/" + p.lstrip("/")) for p in pages)


def first_rank(relevance: Sequence[bool]) -> int | None:
    """1-based rank of the first relevant item, None when there is none."""
    return next((i for i, r in enumerate(relevance, 1) if r), None)


def hit_at(rank: int | None, k: int) -> float:
    """1.0 when the first relevant item is within the top ``k``."""
    return 1.0 if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None) -> float:
    """1/rank of the first relevant item (0 when none): averaged over cases, the MRR."""
    return 0.0 if rank is None else 1.0 / rank


def ndcg_at(relevance: Sequence[bool], k: int) -> float:
    """nDCG@k with binary gains (Järvelin & Kekäläinen 2002): DCG = sum rel_i / log2(i + 1) over the
    top k; the ideal ranking puts the relevant items retrieved in the top k first (the full set of
    relevant chunks in the corpus is unknown). 0 when none is relevant."""
    top = list(relevance[:k])
    dcg = sum(1.0 / math.log2(i + 1) for i, r in enumerate(top, 1) if r)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, sum(top) + 1))
    return dcg / ideal if ideal else 0.0


def _squad_normalize(text: str) -> list[str]:
    """SQuAD v1.1's answer normalization: lowercase, drop punctuation and articles, split on whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both normalize to the same tokens (SQuAD v1.1 evaluation script)."""
    return 1.0 if _squad_normalize(prediction) == _squad_normalize(reference) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after SQuAD v1.1 normalization (its ``f1_score``)."""
    pred, ref = _squad_normalize(prediction), _squad_normalize(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def citation_counts(sentences: Sequence[dict[str, object]]) -> tuple[int, int]:
    """``(cited sentences, of which supported)`` from a validator verdict's sentence rows
    (:func:`sovereign.agents.nodes.validator.validate`): a sentence that cites a source counts when
    its best cited source supports it. Summed over cases, supported/cited is citation precision."""
    cited = [s for s in sentences if s.get("cited")]
    return len(cited), sum(bool(s.get("supported")) for s in cited)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
