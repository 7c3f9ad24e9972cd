"""Deterministic sticky bucketing: ``bucket(salt, subject) -> [0, 10000)``.

The hash is MurmurHash3 x86 32-bit (``mmh3.hash(key, seed=0, signed=False)``) of ``"salt:subject"``,
the construction Unleash uses for its gradual-rollout strategy
(``normalizedHash = murmurhash3(groupId + ":" + userId, seed) % 100 + 1``,
https://docs.getunleash.io/reference/stickiness); Sovereign keeps 10,000 buckets instead of 100 so
a step of 0.01 % is expressible. The same subject lands in the same bucket on every process and
host, and a subject inside ``percent`` stays inside every larger ``percent`` (monotone rollouts).
"""

from __future__ import annotations

import random

import mmh3

BUCKETS = 10_000


def bucket(salt: str, subject: str | None) -> int:
    """The bucket in ``[0, 10000)`` of ``subject`` under ``salt`` (a flag name or a rollout target).

    ``subject`` None (an anonymous request) gets a random bucket: no stickiness without an identity.
    """
    if subject is None:
        return random.randrange(BUCKETS)
    return mmh3.hash(f"{salt}:{subject}", 0, signed=False) % BUCKETS


def within(salt: str, subject: str | None, percent: float) -> bool:
    """True when ``subject``'s bucket falls below ``percent`` (0..100) of the buckets."""
    return bucket(salt, subject) < round(percent * BUCKETS / 100)
