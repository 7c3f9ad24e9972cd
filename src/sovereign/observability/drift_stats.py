"""Pure drift statistics: a window of live traffic against a stored baseline, one signal at a time.

Categorical signals: Pearson's chi-square test of homogeneity on the 2 x K table (baseline
counts, window counts) with ``scipy.stats.chi2_contingency``; effect size Cramér's V
(Cramér 1946, *Mathematical Methods of Statistics*, 21.9), ``V = sqrt(chi2 / (N * (min(r, c) - 1)))``,
computed on the table whose baseline row is rescaled to the window's size so that V measures the
difference in proportions alone, not how much larger the baseline is. Categories whose expected
count is under 5 in the rescaled table are pooled into ``"(other)"`` first (the usual validity
condition of the chi-square approximation; Cochran 1954).

Numeric signals: the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``, statistic D,
the largest gap between the two empirical CDFs) and the Population Stability Index,
``PSI = sum_i (w_i - b_i) * ln(w_i / b_i)`` over 10 bins cut at the baseline's deciles, an empty
bin's proportion replaced by :data:`PSI_EPSILON`. The usual reading (Siddiqi 2006, *Credit Risk
Scorecards*, ch. 8; Yurdakul 2018, "Statistical properties of the population stability index"):
under 0.1 no real shift, 0.1 to 0.25 a moderate one, over 0.25 a major one.

Drifted means significant AND large: ``p < alpha`` (default 0.001) and the effect size at least
its minimum (V >= 0.1, a "small" effect in Cohen 1988; KS D >= 0.1 or PSI >= 0.2). A window of a
million requests makes any difference significant; the effect-size floor keeps trivial ones from
alerting. Fewer than ``min_samples`` observations on either side: status ``insufficient``, never
drifted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

PSI_BINS = 10
PSI_EPSILON = 1e-4
MIN_EXPECTED = 5.0
OTHER = "(other)"
Status = Literal["ok", "drift", "insufficient"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a signal counts as drifted (defaults as in the module docstring)."""

    alpha: float = 0.001
    min_cramers_v: float = 0.1
    min_psi: float = 0.2
    min_ks: float = 0.1
    min_samples: int = 200


@dataclass(frozen=True, slots=True)
class Statistic:
    """One test of one signal: ``test`` is ``chi2`` (statistic Cramér's V), ``psi`` or ``ks`` (D).

    ``p_value`` is None for PSI (it has none) and when there are too few samples.
    """

    test: Literal["chi2", "psi", "ks"]
    statistic: float
    p_value: float | None


@dataclass(frozen=True, slots=True)
class SignalResult:
    """The verdict on one signal, with the two distributions a chart needs.

    ``chart`` is ``{"labels": [str], "baseline": [proportion], "window": [proportion]}``: categories
    (categorical) or the PSI bins ``[lo, hi)`` (numeric).
    """

    signal: str
    kind: Literal["categorical", "numeric"]
    status: Status
    window_n: int
    baseline_n: int
    tests: tuple[Statistic, ...] = ()
    chart: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def detected(self) -> bool:
        return self.status == "drift"

    def to_dict(self) -> dict[str, Any]:
        """JSON shape of ``GET /admin/drift``'s ``signals`` items."""
        return {
            "signal": self.signal, "kind": self.kind, "status": self.status, "detected": self.detected,
            "window_n": self.window_n, "baseline_n": self.baseline_n,
            "tests": [{"test": t.test, "statistic": t.statistic, "p_value": t.p_value} for t in self.tests],
            "chart": self.chart,
        }


def _proportions(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total if total else 0.0 for c in counts]


def compare_categorical(signal: str, baseline: Mapping[str, int], window: Mapping[str, int],
                        thresholds: Thresholds = Thresholds()) -> SignalResult:
    """Chi-square test of homogeneity, baseline counts vs window counts, with Cramér's V.

    Args:
        baseline / window: category -> count (categories missing on one side count 0 there).

    A category never seen in the baseline is a column with a 0 baseline cell: it raises chi-square
    as it should. Returns status ``insufficient`` below ``min_samples`` on either side.
    """
    n_b, n_w = sum(baseline.values()), sum(window.values())
    seen = {k for k in set(baseline) | set(window) if baseline.get(k, 0) + window.get(k, 0) > 0}
    labels = sorted(seen, key=lambda k: (-(baseline.get(k, 0) + window.get(k, 0)), k))
    chart: dict[str, list[Any]] = {"labels": labels, "baseline": _proportions([baseline.get(k, 0) for k in labels]),
             "window": _proportions([window.get(k, 0) for k in labels])}
    if min(n_b, n_w) < thresholds.min_samples:
        return SignalResult(signal, "categorical", "insufficient", n_w, n_b, chart=chart)
    scale = n_w / n_b
    # expected count of a cell in the rescaled table (both rows n_w): the mean of its two cells
    kept = [k for k in labels if (baseline.get(k, 0) * scale + window.get(k, 0)) / 2 >= MIN_EXPECTED]
    pooled = [k for k in labels if k not in kept]
    b_row = [float(baseline.get(k, 0)) for k in kept]
    w_row = [float(window.get(k, 0)) for k in kept]
    if pooled:
        b_row.append(float(sum(baseline.get(k, 0) for k in pooled)))
        w_row.append(float(sum(window.get(k, 0) for k in pooled)))
    if len(b_row) < 2:  # one category only: nothing can have moved between categories
        return SignalResult(signal, "categorical", "ok", n_w, n_b, (Statistic("chi2", 0.0, 1.0),), chart)
    _, p_value, _, _ = stats.chi2_contingency(np.array([b_row, w_row]), correction=False)
    balanced = np.array([[c * scale for c in b_row], w_row])
    chi2_balanced = stats.chi2_contingency(balanced, correction=False)[0]
    cramers_v = math.sqrt(float(chi2_balanced) / (balanced.sum() * (min(balanced.shape) - 1)))
    drifted = float(p_value) < thresholds.alpha and cramers_v >= thresholds.min_cramers_v
    return SignalResult(signal, "categorical", "drift" if drifted else "ok", n_w, n_b,
                        (Statistic("chi2", cramers_v, float(p_value)),), chart)


def psi_bins(baseline: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges: the baseline's quantiles at 1/bins .. (bins-1)/bins, duplicates removed
    (heavily tied data, such as token counts, gets fewer bins)."""
    return np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)[1:-1]))


def psi(baseline: np.ndarray, window: np.ndarray, edges: np.ndarray | None = None) -> tuple[float, list[float],
                                                                                           list[float]]:
    """Population Stability Index of ``window`` against ``baseline`` (1-D float arrays).

    Returns:
        ``(psi, baseline proportions, window proportions)`` over the bins ``(-inf, e0), [e0, e1), ...``.
    """
    edges = psi_bins(baseline) if edges is None else edges
    b = np.bincount(np.searchsorted(edges, baseline, side="right"), minlength=len(edges) + 1) / len(baseline)
    w = np.bincount(np.searchsorted(edges, window, side="right"), minlength=len(edges) + 1) / len(window)
    b_eps, w_eps = np.maximum(b, PSI_EPSILON), np.maximum(w, PSI_EPSILON)
    return float(np.sum((w_eps - b_eps) * np.log(w_eps / b_eps))), b.tolist(), w.tolist()


def compare_numeric(signal: str, baseline: Sequence[float] | np.ndarray, window: Sequence[float] | np.ndarray,
                    thresholds: Thresholds = Thresholds()) -> SignalResult:
    """KS and PSI of ``window`` against ``baseline`` values; drifted when KS ``p < alpha`` and
    (``D >= min_ks`` or ``PSI >= min_psi``). Non-finite values are ignored."""
    b = np.asarray(baseline, dtype=float)
    w = np.asarray(window, dtype=float)
    b, w = b[np.isfinite(b)], w[np.isfinite(w)]
    if min(len(b), len(w)) < thresholds.min_samples:
        return SignalResult(signal, "numeric", "insufficient", len(w), len(b))
    edges = psi_bins(b)
    index, b_props, w_props = psi(b, w, edges)
    ks = stats.ks_2samp(b, w)
    d, p_value = float(ks.statistic), float(ks.pvalue)
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    chart: dict[str, list[Any]] = {"labels": [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(bounds)],
             "baseline": b_props, "window": w_props}
    drifted = p_value < thresholds.alpha and (d >= thresholds.min_ks or index >= thresholds.min_psi)
    return SignalResult(signal, "numeric", "drift" if drifted else "ok", len(w), len(b),
                        (Statistic("ks", d, p_value), Statistic("psi", index, None)), chart)
