"""The semantic layer's in-process index: int8 candidates, exact float32 scores, scopes, expiry."""

from __future__ import annotations

import numpy as np
import pytest

from sovereign.cache.semantic import EXACT_BELOW, VectorIndex


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(3).standard_normal((EXACT_BELOW + 1000, 384)))


@pytest.fixture(scope="module")
def graph_index(vectors: np.ndarray) -> VectorIndex:
    """One scope above EXACT_BELOW entries, so searches go through the HNSW graph."""
    index = VectorIndex(384)
    for i, vector in enumerate(vectors):
        index.add("big", f"k{i}", vector, expires=1e12)
    return index


def test_scores_are_exact_cosines_on_the_graph_path(graph_index: VectorIndex, vectors: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    picks = rng.integers(0, len(vectors), 200)
    queries = unit(vectors[picks] + 0.02 * rng.standard_normal((200, 384)))
    found = 0
    for pick, query in zip(picks, queries, strict=True):
        results = graph_index.search("big", query, k=4, now=0.0)
        assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)
        for key, score in results:
            assert score == pytest.approx(float(vectors[int(key[1:])] @ query), abs=1e-6)
        found += results[0][0] == f"k{pick}"
    assert found >= 196  # int8 graph search still finds the stored neighbour (measured 200/200)


def test_exact_rescoring_breaks_int8_ties() -> None:
    """Two vectors whose int8 codes (nearly all equal) rank ``base`` first for a query on ``twin``:
    only the float32 re-scoring serves ``twin``."""
    base = unit(np.random.default_rng(5).standard_normal(384))
    twin = unit(base + 0.001 * np.sign(base))  # moves every component by less than one int8 step
    index = VectorIndex(384)
    index.add("s", "base", base, expires=1e12)
    index.add("s", "twin", twin, expires=1e12)
    assert index.search("s", twin, k=1, now=0.0)[0][0] == "twin"
    assert index.search("s", base, k=1, now=0.0)[0][0] == "base"


def test_min_score_scopes_expiry_and_removal() -> None:
    rng = np.random.default_rng(6)
    a, b = unit(rng.standard_normal((2, 384)))
    index = VectorIndex(384)
    index.add("one", "a", a, expires=100.0)
    index.add("two", "b", b, expires=100.0)
    assert [k for k, _ in index.search("one", a, now=0.0)] == ["a"]  # scope "two" is never seen
    assert index.search("one", b, now=0.0, min_score=0.5) == []  # a random pair has cosine ~0
    assert index.search("one", a, now=100.0) == []  # expired
    assert index.expired(100.0) == ["a", "b"]
    assert index.remove("a") and not index.remove("a")
    assert index.search("one", a, now=0.0) == [] and "a" not in index and len(index) == 1
