"""Drift statistics: a synthetic shift is detected, a resample of the baseline is not.

Bad input tried: an empty window, a category never seen in the baseline, too few samples, a single
category, non-finite numbers, heavily tied numbers (token counts).
"""

from __future__ import annotations

import numpy as np
import pytest

from sovereign.observability.drift_stats import (
    Thresholds,
    compare_categorical,
    compare_numeric,
    psi,
)

CATEGORIES = ("retrieve", "direct", "docs", "code")
BASE_P = (0.45, 0.30, 0.15, 0.10)


def counts(p: tuple[float, ...], n: int, seed: int, categories: tuple[str, ...] = CATEGORIES) -> dict[str, int]:
    values = np.random.default_rng(seed).choice(categories, size=n, p=p)
    names, n_each = np.unique(values, return_counts=True)
    return dict(zip(names.tolist(), n_each.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_resample_of_the_categorical_baseline_is_not_drift(seed: int) -> None:
    result = compare_categorical("route", counts(BASE_P, 3000, 0), counts(BASE_P, 1000, seed))
    assert result.status == "ok", result
    assert result.tests[0].statistic < 0.1


def test_categorical_proportions_moved_by_20_points_are_drift() -> None:
    shifted = (0.25, 0.50, 0.15, 0.10)  # 20 points from the first category to the second
    result = compare_categorical("route", counts(BASE_P, 3000, 0), counts(shifted, 1000, 1))
    assert result.status == "drift" and result.detected
    chi2 = result.tests[0]
    assert chi2.test == "chi2" and chi2.p_value is not None and chi2.p_value < 1e-10 and chi2.statistic >= 0.1
    assert result.window_n == 1000 and result.baseline_n == 3000


def test_cramers_v_does_not_shrink_with_a_larger_baseline() -> None:
    """The effect size compares proportions: the same shift against a 10x baseline keeps its V."""
    shifted = counts((0.25, 0.50, 0.15, 0.10), 500, 1)
    small = compare_categorical("route", counts(BASE_P, 500, 0), shifted).tests[0].statistic
    large = compare_categorical("route", counts(BASE_P, 5000, 0), shifted).tests[0].statistic
    assert abs(small - large) < 0.05


def test_a_small_but_significant_shift_on_huge_samples_is_not_drift() -> None:
    """p < alpha alone does not alert: the effect-size floor (V >= 0.1) filters trivial differences."""
    base = {"a": 500_000, "b": 500_000}
    window = {"a": 510_000, "b": 490_000}  # one point: p ~ 1e-45, V = 0.01
    result = compare_categorical("model", base, window)
    assert result.tests[0].p_value is not None and result.tests[0].p_value < 1e-20
    assert result.status == "ok"


def test_a_category_never_seen_in_the_baseline_is_drift() -> None:
    base = {"en": 900, "de": 100}
    window = {"en": 450, "de": 50, "ja": 500}  # bad input: a category absent from the baseline
    result = compare_categorical("language", base, window)
    assert result.status == "drift"
    assert "ja" in result.chart["labels"] and result.chart["baseline"][result.chart["labels"].index("ja")] == 0


def test_rare_categories_are_pooled_and_do_not_alert_alone() -> None:
    base = {"a": 600, "b": 400, **{f"rare{i}": 1 for i in range(10)}}
    window = {"a": 590, "b": 410, **{f"other{i}": 1 for i in range(10)}}
    assert compare_categorical("collection", base, window).status == "ok"


def test_empty_window_and_too_few_samples_are_insufficient_not_drift() -> None:
    base = counts(BASE_P, 3000, 0)
    empty = compare_categorical("route", base, {})  # bad input: no traffic at all
    assert empty.status == "insufficient" and not empty.detected and empty.window_n == 0 and not empty.tests
    few = compare_categorical("route", base, {"code": 150})  # bad input: 150 < min_samples, all moved
    assert few.status == "insufficient" and not few.detected
    no_base = compare_numeric("prompt_tokens", [], np.arange(1000.0))
    assert no_base.status == "insufficient" and no_base.baseline_n == 0
    assert compare_numeric("x", np.zeros(100), np.ones(100), Thresholds(min_samples=50)).status == "drift"


def test_a_single_category_cannot_drift() -> None:
    result = compare_categorical("model", {"m": 1000}, {"m": 500})
    assert result.status == "ok" and result.tests[0].p_value == 1.0


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_resample_of_the_numeric_baseline_is_not_drift(seed: int) -> None:
    baseline = np.random.default_rng(0).normal(0.6, 0.1, 5000)
    result = compare_numeric("retrieval_score", baseline, np.random.default_rng(seed).normal(0.6, 0.1, 1000))
    assert result.status == "ok", result
    ks, psi_stat = result.tests
    assert ks.test == "ks" and ks.statistic < 0.1 and psi_stat.test == "psi" and psi_stat.statistic < 0.1
    assert psi_stat.p_value is None


def test_a_mean_shift_of_half_a_standard_deviation_is_drift() -> None:
    baseline = np.random.default_rng(0).normal(0.6, 0.1, 5000)
    result = compare_numeric("retrieval_score", baseline, np.random.default_rng(1).normal(0.65, 0.1, 1000))
    assert result.status == "drift"
    ks, psi_stat = result.tests
    assert ks.p_value is not None and ks.p_value < 1e-10 and 0.15 < ks.statistic < 0.26
    assert psi_stat.statistic > 0.15  # about 0.2 for half a standard deviation: between "moderate" and "major"
    assert len(result.chart["labels"]) == 10 and abs(sum(result.chart["window"]) - 1) < 1e-9


def test_tied_token_counts_and_non_finite_values() -> None:
    rng = np.random.default_rng(0)
    base = rng.poisson(30, 4000).astype(float)
    same = np.concatenate([rng.poisson(30, 1000).astype(float), [np.nan, np.inf]])  # bad input: nan, inf
    assert compare_numeric("prompt_tokens", base, same).status == "ok"
    longer = rng.poisson(45, 1000).astype(float)
    result = compare_numeric("prompt_tokens", base, longer)
    assert result.status == "drift" and result.window_n == 1000


def test_psi_of_identical_samples_is_zero_and_empty_bins_stay_finite() -> None:
    x = np.linspace(0, 1, 1000)
    assert psi(x, x)[0] == pytest.approx(0.0, abs=1e-12)
    value, base_props, window_props = psi(x, np.full(500, 2.0))  # every window value in the top bin
    assert np.isfinite(value) and value > 5 and window_props[-1] == 1.0 and len(base_props) == 10
