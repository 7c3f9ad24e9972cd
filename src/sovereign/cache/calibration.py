"""Threshold calibration on labelled question pairs (``data/cache_pairs/pairs.jsonl``).

A pair ``(a, b, label)`` says whether a cached answer to ``a`` may be served for ``b``. For a
threshold t, a pair is a *hit* when cosine(a, b) >= t and the contrast guard finds no conflict.
Hit rate = hits among ``label == "hit"`` pairs; false-hit rate = hits among ``label == "miss"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sovereign.cache.semantic import contrast


def load_pairs(path: Path) -> list[dict[str, Any]]:
    """The labelled pairs, one JSON object per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def rates(pairs: Sequence[dict[str, Any]], cosines: np.ndarray, threshold: float, *, guard: bool) -> dict[str, Any]:
    """Hit rate and false-hit rate (fractions) at ``threshold``, with per-kind false hits."""
    served = cosines >= threshold
    if guard:
        served &= np.array([contrast(p["a"], p["b"]) is None for p in pairs])
    labels = np.array([p["label"] == "hit" for p in pairs])
    kinds: dict[str, int] = {}
    for p, s in zip(pairs, served, strict=True):
        if s and p["label"] == "miss":
            kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    return {
        "threshold": round(float(threshold), 3),
        "hit_rate": round(float(served[labels].mean()), 4),
        "false_hit_rate": round(float(served[~labels].mean()), 4),
        "false_hits_by_kind": kinds,
    }


def calibrate(
    pairs: Sequence[dict[str, Any]], cosines: np.ndarray, *, max_false_hit: float = 0.01, guard: bool = True
) -> dict[str, Any]:
    """The lowest threshold (0.80..0.99, step 0.01) whose false-hit rate is <= ``max_false_hit``,
    with the sweep. Lowest such threshold = the highest hit rate within the false-hit budget."""
    sweep = [rates(pairs, cosines, t, guard=guard) for t in np.round(np.arange(0.80, 0.995, 0.01), 2)]
    ok = [row for row in sweep if row["false_hit_rate"] <= max_false_hit]
    return {"chosen": ok[0] if ok else None, "sweep": sweep}
