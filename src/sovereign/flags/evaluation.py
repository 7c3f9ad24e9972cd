"""Evaluate a flag for one subject: enabled, dependencies, targeting rules, then sticky bucketing.

Order (first that decides wins), each with the ``reason`` it reports (OpenFeature's reason names
where one exists: https://openfeature.dev/specification/types#resolution-reason):

1. ``DISABLED``: the flag is off.
2. ``PREREQUISITE_FAILED``: a flag it depends on evaluates off for this subject.
3. ``TARGETING_MATCH``: a rule's attribute matches.
4. ``STATIC`` (boolean flags) or ``SPLIT`` (percentage and variant flags, sticky by subject).

The subject of bucketing is the first of ``user``, ``api_key``, ``tenant`` that is set; a request
with none is bucketed at random (no stickiness without an identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sovereign.errors import NotFoundError
from sovereign.flags.bucketing import BUCKETS, bucket, within
from sovereign.flags.model import OFF, ON, Flag


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """Who is asking: the key's id (never its secret), tenant, user and request headers (lower-case names)."""

    user: str | None = None
    api_key: str | None = None
    tenant: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def subject(self) -> str | None:
        return self.user or self.api_key or self.tenant

    def attribute(self, name: str) -> str | None:
        if name.startswith("header:"):
            return self.headers.get(name.removeprefix("header:").lower())
        return {"user": self.user, "api_key": self.api_key, "tenant": self.tenant}.get(name)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome: ``enabled`` (False only for the ``off`` variant), ``variant`` and ``reason``."""

    flag: str
    variant: str
    reason: str

    @property
    def enabled(self) -> bool:
        return self.variant != OFF


def evaluate(flags: Mapping[str, Flag], name: str, ctx: EvaluationContext) -> Evaluation:
    """Evaluate ``name`` for ``ctx`` over the flag set ``flags`` (already checked: no cycles).

    Raises:
        NotFoundError: no flag ``name``.
    """
    flag = flags.get(name)
    if flag is None:
        raise NotFoundError(f"No flag named {name!r}; `sovereign flags list` shows them.", param="flag")
    if not flag.enabled:
        return Evaluation(name, OFF, "DISABLED")
    for dep in flag.depends_on:
        if not evaluate(flags, dep, ctx).enabled:
            return Evaluation(name, OFF, "PREREQUISITE_FAILED")
    for rule in flag.rules:
        if ctx.attribute(rule.attribute) in rule.values:
            return Evaluation(name, rule.serve, "TARGETING_MATCH")
    if flag.kind == "boolean":
        return Evaluation(name, ON, "STATIC")
    if flag.kind == "percentage":
        return Evaluation(name, ON if within(name, ctx.subject, flag.percentage) else OFF, "SPLIT")
    total = sum(flag.variants.values())
    point = bucket(name, ctx.subject) / BUCKETS * total
    for variant, weight in flag.variants.items():
        if point < weight:
            return Evaluation(name, variant, "SPLIT")
        point -= weight
    last = [v for v, w in flag.variants.items() if w > 0][-1]  # float rounding at the very top
    return Evaluation(name, last, "SPLIT")
