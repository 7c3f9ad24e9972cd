"""A rollout: its spec, its durable state, and the decision taken at each check (pure functions).

A rollout moves a **candidate** (a deployment of a model, or the ``on`` side of a flag) through
``steps`` percents of subjects, ``interval_s`` per stage. Each check compares the candidate arm with
the stable arm over the current stage (:mod:`sovereign.flags.analysis`) and :func:`decide` returns
one of:

- ``rollback``: the candidate has at least ``min_requests`` and breaches a threshold (error ratio,
  p95, p99, TTFT p95) that the stable arm does not breach. All traffic goes back to stable at once.
- ``hold``: both arms breach the same threshold: the environment is at fault, not the candidate; the
  stage neither advances nor rolls back.
- ``promote``: the stage lasted ``interval_s`` with at least ``min_requests`` on the candidate and
  no breach: the next step (or ``promoted`` at 100 %).
- ``inconclusive``: the stage is over but the candidate has fewer than ``min_requests``; it waits,
  and never promotes. After ``max_wait_intervals`` intervals the rollout pauses for an operator.
- ``wait``: none of the above yet.

An **evaluation gate** (``spec.gate``, :class:`~sovereign.evaluation.gate.EvalGate`) holds the
rollout before stage ``gate.before_stage`` (0: before any canary traffic, at 0 %) until the
controller's evaluation of the candidate on the gate's dataset meets its bounds; a miss aborts the
rollout (reason ``eval_gate``). ``state.gate`` records ``{"status": "pending"|"running"|"passed"|
"failed", "stage", "metrics", "failures", "dataset"}``.

States: ``progressing`` → ``promoted`` | ``rolled_back`` | ``paused`` (→ ``progressing`` on resume)
| ``aborted`` (an operator's rollback). Only ``progressing`` and ``paused`` are active.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sovereign.evaluation.gate import EvalGate
from sovereign.flags.analysis import ArmStats, histogram_quantile

Status = Literal["progressing", "paused", "promoted", "rolled_back", "aborted"]
ACTIVE: frozenset[str] = frozenset({"progressing", "paused"})
Action = Literal["rollback", "hold", "promote", "inconclusive", "wait"]


class RolloutSpec(BaseModel):
    """What to roll out and how to judge it (seconds, ratios 0..1, percents 0..100)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["deployment", "flag"] = "deployment"
    route: str | None = Field(None, description="The model whose deployments are split (kind deployment).")
    candidate: str = Field(min_length=1, description="The candidate deployment, or the flag (kind flag).")
    steps: list[float] = Field(default_factory=lambda: [10.0, 25.0, 50.0, 75.0, 100.0], min_length=1)
    interval_s: float = Field(300.0, gt=0)
    max_error_ratio: float = Field(0.05, ge=0, le=1)
    max_p95_s: float | None = Field(5.0, gt=0)
    max_p99_s: float | None = Field(8.0, gt=0)
    max_ttft_p95_s: float | None = Field(None, gt=0)
    min_requests: int = Field(50, ge=1)
    max_wait_intervals: int = Field(3, ge=1, description="Intervals an inconclusive stage waits before pausing.")
    prometheus_url: str | None = None
    gate: EvalGate | None = Field(None, description="An evaluation the candidate must pass before a stage.")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError("steps must be increasing percents in (0, 100] ending at 100, e.g. 10,25,50,75,100")
        return steps

    @model_validator(mode="after")
    def _route_for_deployments(self) -> RolloutSpec:
        if self.kind == "deployment" and not self.route:
            raise ValueError("a deployment rollout needs a route (the model name)")
        if self.gate is not None and self.gate.before_stage >= len(self.steps):
            raise ValueError(f"gate.before_stage must name a stage 0..{len(self.steps) - 1}")
        if self.gate is not None and self.gate.model is None and self.kind == "flag":
            raise ValueError("a flag rollout's gate needs gate.model (the model to evaluate)")
        return self

    @property
    def target(self) -> str:
        """The rollout's key: ``route:MODEL`` or ``flag:NAME`` (one rollout per target)."""
        return f"route:{self.route}" if self.kind == "deployment" else f"flag:{self.candidate}"

    @property
    def metric_model(self) -> str:
        """The ``model`` label of the rollout metrics."""
        return self.route or "" if self.kind == "deployment" else f"flag:{self.candidate}"


@dataclass(slots=True)
class RolloutState:
    """Where a rollout is: ``step`` indexes ``spec.steps``; ``baseline`` is the local metrics snapshot
    at the stage's start; ``analysis`` the last check's figures; times are Unix seconds."""

    status: Status = "progressing"
    step: int = 0
    percent: float = 0.0
    started_at: float = field(default_factory=time.time)
    stage_started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    baseline: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    gate: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        return cls(**data)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class GateEvaluator(Protocol):
    """Runs a gate's evaluation (:class:`sovereign.evaluation.gate.InProcessGate` in the gateway)."""

    async def __call__(self, gate: EvalGate, model: str, deployment: str | None) -> dict[str, Any]:
        """The evaluation result (``EvalResult.to_dict()``). Raises SovereignError when it cannot run."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` concluded, the threshold names breached and a sentence for the audit log."""

    action: Action
    breaches: tuple[str, ...] = ()
    detail: str = ""


def breaches(stats: ArmStats, spec: RolloutSpec) -> list[str]:
    """The thresholds ``stats`` breaches: ``error_ratio``, ``p95``, ``p99``, ``ttft_p95`` (None = unset)."""
    out = []
    if (stats.error_ratio or 0.0) > spec.max_error_ratio:
        out.append("error_ratio")
    for name, q, limit, buckets in (("p95", 0.95, spec.max_p95_s, stats.duration),
                                    ("p99", 0.99, spec.max_p99_s, stats.duration),
                                    ("ttft_p95", 0.95, spec.max_ttft_p95_s, stats.ttft)):
        value = histogram_quantile(q, buckets)
        if limit is not None and value is not None and value > limit:
            out.append(name)
    return out


def decide(spec: RolloutSpec, state: RolloutState, candidate: ArmStats, stable: ArmStats, now: float) -> Decision:
    """The action for a ``progressing`` rollout after one check (see the module docstring)."""
    elapsed = now - state.stage_started_at
    enough = candidate.requests >= spec.min_requests
    if enough:
        bad = breaches(candidate, spec)
        if bad:
            shared = set(bad) & set(breaches(stable, spec)) if stable.requests >= spec.min_requests else set()
            if shared == set(bad):
                return Decision("hold", tuple(bad), f"stable breaches {', '.join(bad)} too: not the candidate")
            own = tuple(b for b in bad if b not in shared)
            return Decision("rollback", own, f"candidate breaches {', '.join(own)} "
                                              f"over {candidate.requests:.0f} requests")
        if elapsed >= spec.interval_s:
            return Decision("promote", (), f"{candidate.requests:.0f} requests, no breach")
        return Decision("wait")
    if elapsed >= spec.interval_s:
        return Decision("inconclusive", (), f"{candidate.requests:.0f} of {spec.min_requests} requests on the "
                                            f"candidate after {elapsed:.0f}s: not judged, not promoted")
    return Decision("wait")
