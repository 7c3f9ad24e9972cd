"""A per-deployment circuit breaker: closed -> open -> half-open -> closed.

States (exported as ``sovereign_engine_breaker_state{engine}``: 0 closed, 1 half-open, 2 open):

- **closed**: requests flow; ``failure_threshold`` consecutive failures open the breaker.
- **open**: requests skip the deployment (the router falls back at once) for ``cooldown_s`` seconds.
- **half-open**: after the cooldown, or when an active health probe passes, exactly one trial
  request is let through; its success closes the breaker, its failure opens it for another cooldown.

Only engine failures count (connection errors, 5xx, 429, timeouts, streams dropped mid-way), never
a client's bad request. Time comes from an injectable monotonic ``clock`` (seconds) so tests can
move it forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from sovereign.observability import metrics


class BreakerState(IntEnum):
    """The gauge values of ``sovereign_engine_breaker_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Consecutive-failure breaker with cooldown and a single half-open trial.

    Args:
        name: deployment name (the ``engine`` metric label).
        failure_threshold: consecutive failures that open the breaker (>= 1).
        cooldown_s: seconds the breaker stays open before a trial is allowed.
        clock: monotonic time source in seconds.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._export()

    def _export(self) -> None:
        metrics.ENGINE_BREAKER_STATE.labels(engine=self.name).set(int(self._state))

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cooldown has passed reads as half-open."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
            self._export()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """Whether a request may go to the deployment now (claims the half-open trial slot)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker and reset the failure count."""
        self._failures = 0
        self._trial_in_flight = False
        if self._state is not BreakerState.CLOSED:
            self._state = BreakerState.CLOSED
            self._export()

    def record_failure(self) -> None:
        """A call failed: count it; open at the threshold, or at once when half-open."""
        self._failures += 1
        self._trial_in_flight = False
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._export()

    def release(self) -> None:
        """A claimed half-open trial ended with neither success nor engine failure (e.g. a 400)."""
        self._trial_in_flight = False

    def probe_passed(self) -> None:
        """An active health probe passed: an open breaker moves to half-open (one trial) at once."""
        if self._state is BreakerState.OPEN:
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
            self._export()

    def probe_failed(self) -> None:
        """An active health probe failed: counts as a failure; an open breaker's cooldown restarts."""
        if self._state is BreakerState.OPEN:
            self._opened_at = self._clock()
        else:
            self.record_failure()
