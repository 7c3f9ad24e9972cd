"""Canary analysis: candidate vs stable over one stage, from the gateway's own metrics or Prometheus.

An :class:`Arm` is one side of a rollout: some deployments of a model (their
``sovereign_deployment_*`` families) or some variants of a flag (``sovereign_flag_*``). Its
:class:`ArmStats` over a stage are the requests by outcome and the latency histograms, from which
error ratio, p95, p99 and TTFT p95 follow.

Two sources, one shape:

- :class:`LocalMetrics`: the gateway's registry (every uvicorn worker of this host when
  ``PROMETHEUS_MULTIPROC_DIR`` is set). A stage's figures are the snapshot now minus the snapshot
  taken when the stage began (stored with the rollout); a counter below its baseline means the
  gateway restarted, and the stage then counts from zero.
- :class:`PrometheusMetrics`: ``increase(...[Ns])`` over the stage's elapsed seconds through the
  HTTP API (``/api/v1/query``), for several hosts behind one Prometheus.

Quantiles come from cumulative histogram buckets by :func:`histogram_quantile`, the same linear
interpolation as PromQL's ``histogram_quantile`` (prometheus/prometheus ``promql/quantile.go``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

from sovereign.errors import EngineUnavailableError

Snapshot = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Family:
    """The metric families and labels of one kind of arm."""

    requests: str
    duration: str
    ttft: str | None
    scope_label: str
    member_label: str


FAMILIES: dict[str, Family] = {
    "deployment": Family("sovereign_deployment_requests", "sovereign_deployment_request_duration_seconds",
                         "sovereign_deployment_time_to_first_token_seconds", "model", "deployment"),
    "flag": Family("sovereign_flag_requests", "sovereign_flag_request_duration_seconds", None, "flag", "variant"),
}


@dataclass(frozen=True, slots=True)
class Arm:
    """One side of a rollout: ``members`` (deployments or variants) of ``scope`` (model or flag)."""

    name: Literal["candidate", "stable"]
    kind: Literal["deployment", "flag"]
    scope: str
    members: tuple[str, ...]

    @property
    def family(self) -> Family:
        return FAMILIES[self.kind]


@dataclass(slots=True)
class ArmStats:
    """One arm over one stage: requests by outcome and cumulative buckets ``{le: count}`` (seconds)."""

    ok: float = 0.0
    errors: float = 0.0
    duration: dict[float, float] = field(default_factory=dict)
    ttft: dict[float, float] = field(default_factory=dict)

    @property
    def requests(self) -> float:
        return self.ok + self.errors

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def summary(self) -> dict[str, float | None]:
        """The figures the rollout table and the audit log show (seconds, ratios)."""
        return {
            "requests": round(self.requests, 2),
            "errors": round(self.errors, 2),
            "error_ratio": _round(self.error_ratio),
            "p95_s": _round(histogram_quantile(0.95, self.duration)),
            "p99_s": _round(histogram_quantile(0.99, self.duration)),
            "ttft_p95_s": _round(histogram_quantile(0.95, self.ttft)),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q``-quantile (0..1) of a cumulative histogram ``{upper bound: count}``, ``+Inf`` included.

    As PromQL: find the bucket holding rank ``q * total`` and interpolate linearly inside it; a rank
    in the ``+Inf`` bucket returns the highest finite bound. None without observations.
    """
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for i, (upper, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(upper):
                return ordered[i - 1][0] if i else None
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return ordered[-1][0]


# -- local: the gateway's own registry -------------------------------------------------------------


def _registry() -> Any:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # prometheus-client's own switch
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def _empty() -> dict[str, Any]:
    return {"ok": 0.0, "error": 0.0, "duration": {}, "ttft": {}}


class LocalMetrics:
    """Snapshots of this host's metrics; a stage is ``stats(arm, baseline)`` = now - baseline."""

    def snapshot(self, arms: Iterable[Arm]) -> Snapshot:
        """Per arm name: ``{"ok", "error", "duration": {le: n}, "ttft": {le: n}}`` (JSON-able, le as str)."""
        arms = list(arms)
        out: Snapshot = {arm.name: _empty() for arm in arms}
        for metric in _registry().collect():
            for sample in metric.samples:
                for arm in arms:
                    fam = arm.family
                    if sample.labels.get(fam.scope_label) != arm.scope:
                        continue
                    if sample.labels.get(fam.member_label) not in arm.members:
                        continue
                    into = out[arm.name]
                    if sample.name == fam.requests + "_total":
                        key = "ok" if sample.labels.get("outcome") == "ok" else "error"
                        into[key] += sample.value
                    for part, name in (("duration", fam.duration), ("ttft", fam.ttft)):
                        if name and sample.name == name + "_bucket":
                            le = sample.labels["le"]
                            into[part][le] = into[part].get(le, 0.0) + sample.value
        return out

    def stats(self, arm: Arm, baseline: Snapshot) -> ArmStats:
        """``arm``'s figures since ``baseline`` (all of them when the counters went below it: a restart)."""
        now = self.snapshot([arm])[arm.name]
        base = baseline.get(arm.name) or _empty()
        if now["ok"] < base["ok"] or now["error"] < base["error"]:
            base = _empty()
        return ArmStats(
            ok=now["ok"] - base["ok"],
            errors=now["error"] - base["error"],
            duration={float(le): n - base["duration"].get(le, 0.0) for le, n in now["duration"].items()},
            ttft={float(le): n - base["ttft"].get(le, 0.0) for le, n in now["ttft"].items()},
        )


# -- Prometheus: its HTTP API ------------------------------------------------------------------


def _selector(arm: Arm) -> str:
    fam = arm.family
    members = "|".join(re.escape(m) for m in arm.members) or "^$"
    scope = arm.scope.replace("\\", "\\\\").replace('"', '\\"')
    return f'{fam.scope_label}="{scope}",{fam.member_label}=~"{members}"'


class PrometheusMetrics:
    """Stage figures from a Prometheus server that scrapes every gateway (``rollout.prometheus_url``).

    Raises:
        EngineUnavailableError: Prometheus unreachable or answering an error (the stage waits).
    """

    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=10)

    async def _vector(self, query: str) -> list[dict[str, Any]]:
        try:
            response = await self._client.get(self.url + "/api/v1/query", params={"query": query})
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EngineUnavailableError(f"Prometheus at {self.url} did not answer: {exc}") from exc
        if body.get("status") != "success":
            raise EngineUnavailableError(f"Prometheus query failed: {body.get('error', body)}")
        return list(body["data"]["result"])

    async def stats(self, arm: Arm, window_s: float) -> ArmStats:
        """``arm``'s figures over the last ``window_s`` seconds (``increase`` over ``[Ns]``)."""
        fam, sel, window = arm.family, _selector(arm), f"{max(math.ceil(window_s), 1)}s"
        out = ArmStats()
        for row in await self._vector(f"sum by (outcome) (increase({fam.requests}_total{{{sel}}}[{window}]))"):
            value = float(row["value"][1])
            if row["metric"].get("outcome") == "ok":
                out.ok += value
            else:
                out.errors += value
        for part, name in (("duration", fam.duration), ("ttft", fam.ttft)):
            if name is None:
                continue
            rows = await self._vector(f"sum by (le) (increase({name}_bucket{{{sel}}}[{window}]))")
            setattr(out, part, {float(r["metric"]["le"]): float(r["value"][1]) for r in rows})
        return out

    async def aclose(self) -> None:
        await self._client.aclose()
