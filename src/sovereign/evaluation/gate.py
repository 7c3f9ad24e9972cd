"""Thresholds an evaluation must meet: ``sovereign eval run --min``/``--max`` and a rollout's
evaluation gate (:class:`EvalGate`, checked by the rollout controller before traffic moves)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sovereign.errors import InvalidRequestError
from sovereign.evaluation.scoring import METRICS

if TYPE_CHECKING:
    from sovereign.evaluation.targets import EvalTarget
_THRESHOLD = re.compile(r"\s*([a-z0-9_]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*")


def _check_metrics(bounds: Mapping[str, float]) -> None:
    unknown = sorted(set(bounds) - set(METRICS))
    if unknown:
        raise InvalidRequestError(f"Unknown metric {unknown[0]!r}; metrics: {', '.join(METRICS)}.")


def parse_bounds(items: list[str]) -> dict[str, float]:
    """``["hit_at_5=0.8", "grounded_rate=0.6"]`` as a dict.

    Raises:
        InvalidRequestError: not ``METRIC=NUMBER``, or an unknown metric.
    """
    bounds: dict[str, float] = {}
    for item in items:
        match = _THRESHOLD.fullmatch(item)
        if match is None:
            raise InvalidRequestError(f"{item!r} is not METRIC=NUMBER (e.g. hit_at_5=0.8).")
        bounds[match.group(1)] = float(match.group(2))
    _check_metrics(bounds)
    return bounds


def failures(metrics: Mapping[str, float | None], minimum: Mapping[str, float],
             maximum: Mapping[str, float] | None = None) -> list[str]:
    """Human-readable reasons the metrics miss their bounds ([] = passed); a metric without a value
    (nothing to score) fails its bound."""
    out: list[str] = []
    for name, bound in minimum.items():
        value = metrics.get(name)
        if value is None or value < bound:
            out.append(f"{name} {value if value is not None else 'n/a'} < {bound:g}")
    for name, bound in (maximum or {}).items():
        value = metrics.get(name)
        if value is None or value > bound:
            out.append(f"{name} {value if value is not None else 'n/a'} > {bound:g}")
    return out


class EvalGate(BaseModel):
    """A rollout's evaluation gate: before ``before_stage`` (0 = before the first canary traffic)
    the controller evaluates ``dataset`` (a JSONL path on the gateway's host) on ``model`` (default:
    the rolled-out route's model) pinned to the candidate deployment, and aborts the rollout when a
    bound is missed. ``answers``: also generate and check answers (slow), not only retrieval."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="JSONL dataset path on the gateway's host.")
    model: str | None = None
    minimum: dict[str, float] = Field(default_factory=dict)
    maximum: dict[str, float] = Field(default_factory=dict)
    before_stage: int = Field(0, ge=0)
    answers: bool = True
    limit: int | None = Field(None, ge=1, description="Evaluate the first N questions only.")
    tenant: str | None = Field(None, description="Whose documents are searched (default: the rollout "
                               "starter's over HTTP, the anonymous single user in process).")

    @field_validator("minimum", "maximum")
    @classmethod
    def _known(cls, bounds: dict[str, float]) -> dict[str, float]:
        try:
            _check_metrics(bounds)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from exc
        return bounds


class InProcessGate:
    """The rollout controller's :class:`~sovereign.flags.rollout.GateEvaluator`: evaluates in process
    (:class:`~sovereign.evaluation.targets.InProcessTarget`, no HTTP, no cache) with ``[eval]``'s
    answer budget and the agents' validator threshold.

    Args:
        target_factory: builds the target for a tenant (the running gateway's registry and document memory).
        max_tokens: answer budget. support_threshold: validator cosine threshold (0..1).
    """

    def __init__(self, target_factory: Callable[[str | None], EvalTarget], *, max_tokens: int,
                 support_threshold: float) -> None:
        self.target_factory = target_factory
        self.max_tokens = max_tokens
        self.support_threshold = support_threshold

    async def __call__(self, gate: EvalGate, model: str, deployment: str | None) -> dict[str, Any]:
        from sovereign.evaluation.dataset import load_dataset
        from sovereign.evaluation.runner import EvalConfig, run_eval

        dataset = load_dataset(Path(gate.dataset), gate.limit)
        config = EvalConfig(model=model, deployment=deployment, answers=gate.answers, max_tokens=self.max_tokens,
                            support_threshold=self.support_threshold)
        return (await run_eval(dataset, config, self.target_factory(gate.tenant))).to_dict()
