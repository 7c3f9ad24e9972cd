"""Turn buffered observations into rows, off the request path: prompt languages and query projections.

- ``language``: py3langid (the ``mlops`` extra; a modernised langid.py, Lui & Baldwin 2012, "langid.py:
  An Off-the-shelf Language Identification Tool", 97 ISO 639-1 languages) when importable; otherwise
  the dominant Unicode script of the text's letters (``script:latin``, ``script:cyrillic``, ...), a
  coarser signal that still moves when traffic switches alphabet.
- ``query_projection_0`` / ``_1``: the query embedding's dot products with two fixed random unit
  vectors (seed :data:`PROJECTION_SEED`, one pair per dimension count). A random projection keeps
  distances in expectation (Johnson-Lindenstrauss), so a shift of the query distribution shows
  as a shift of these 1-D distributions, cheap enough to test with KS and PSI.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from sovereign.extras import installed
from sovereign.observability.drift import CATEGORY, NUMBER, PROMPT, VECTOR
from sovereign.observability.drift_store import Row

PROJECTION_SEED = 18  # issue 18; any fixed value works, as long as baseline and window share it
PROJECTIONS = 2


class _LangId:
    """py3langid's ``classify`` (its model loads on the first call, about 2 s), or None when not installed."""

    classify: Any = None
    loaded = False

    @classmethod
    def get(cls) -> Any:
        if not cls.loaded:
            cls.loaded = True
            if installed("py3langid"):
                import py3langid

                cls.classify = py3langid.classify
        return cls.classify


def script_of(text: str) -> str:
    """``script:NAME`` of the most frequent script among the letters of ``text`` (``script:none``
    without letters); the script is the first word of each letter's Unicode name (LATIN, CJK, ...)."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "UNKNOWN").split(" ")[0].lower()
            counts[name] = counts.get(name, 0) + 1
    return f"script:{max(counts, key=lambda k: counts[k])}" if counts else "script:none"


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text`` (py3langid), else :func:`script_of`; ``"none"`` for blank text."""
    if not text.strip():
        return "none"
    classify = _LangId.get()
    if classify is None:
        return script_of(text)
    return str(classify(text)[0])


@lru_cache(maxsize=8)
def projection_matrix(dims: int) -> np.ndarray:
    """``[PROJECTIONS, dims]`` float32 rows: seeded Gaussian vectors scaled to unit length."""
    rows = np.random.default_rng(PROJECTION_SEED).standard_normal((PROJECTIONS, dims))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def to_rows(observations: Iterable[tuple[int, str, Any, float]]) -> list[Row]:
    """``(kind, signal, value, at)`` observations as ``(at, signal, category, value)`` rows, deriving
    ``language`` from prompts and ``query_projection_{i}`` from vectors. Unusable values (a non-finite
    number, a vector of another shape) are skipped."""
    rows: list[Row] = []
    for kind, signal, value, at in observations:
        if kind == CATEGORY:
            rows.append((at, signal, str(value), None))
        elif kind == NUMBER:
            number = float(value)
            if np.isfinite(number):
                rows.append((at, signal, None, number))
        elif kind == PROMPT:
            rows.append((at, signal, detect_language(value), None))
        elif kind == VECTOR:
            vector = np.asarray(value, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(vector))
            if norm > 0 and np.isfinite(norm):
                projected = projection_matrix(len(vector)) @ (vector / norm)
                rows.extend((at, f"{signal}_{i}", None, float(p)) for i, p in enumerate(projected))
    return rows
