"""The drift monitor: flush the recorder to SQLite, compare the window with the baseline, set gauges.

One monitor per worker process, started by the ``drift`` start-up stage when ``drift.enabled``.
Its asyncio task, every ``drift.flush_s`` seconds:

1. drains :data:`~sovereign.observability.drift.RECORDER` and, on the drift database's thread,
   derives languages and query projections (:mod:`~sovereign.observability.drift_derive`) and
   inserts the rows in one transaction, pruning rows older than ``2 * drift.window_s``;
2. every ``drift.check_s`` seconds, reads the window (the last ``drift.window_s`` seconds, every
   worker's rows) and the baseline in force, tests each signal
   (:mod:`~sovereign.observability.drift_stats`) and sets the ``sovereign_drift_*`` gauges.
   With ``drift.auto_baseline`` and no baseline yet, the first full window (rows at least
   ``window_s`` old exist) becomes the baseline.

The report (``GET /admin/drift``) is the last check's; :meth:`DriftMonitor.check` makes a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import numpy as np

from sovereign.config import DriftSettings, Settings
from sovereign.errors import InvalidRequestError
from sovereign.observability import metrics
from sovereign.observability.drift import CATEGORICAL_SIGNALS, NUMERIC_SIGNALS, RECORDER, DriftRecorder
from sovereign.observability.drift_derive import to_rows
from sovereign.observability.drift_stats import (
    SignalResult,
    Statistic,
    Thresholds,
    compare_categorical,
    compare_numeric,
)
from sovereign.observability.drift_store import BASELINE_VALUES, Baseline, DriftStore, Window

log = logging.getLogger("sovereign.drift")
BASELINE_NAME = "default"
SAMPLE_SEED = 0


def snapshot(window: Window, *, name: str = BASELINE_NAME, seed: int = SAMPLE_SEED) -> Baseline:
    """``window`` as a baseline: its category counts, and a uniform sample without replacement
    of at most :data:`~sovereign.observability.drift_store.BASELINE_VALUES` values per numeric signal."""
    rng = np.random.default_rng(seed)
    numeric = {}
    for signal, values in window.numeric.items():
        if len(values) > BASELINE_VALUES:
            values = rng.choice(np.asarray(values), BASELINE_VALUES, replace=False).tolist()
        numeric[signal] = list(values)
    return Baseline(name, time.time(), window.since, window.until,
                    {s: dict(c) for s, c in window.categorical.items()}, numeric)


def compare(window: Window, baseline: Baseline | None, thresholds: Thresholds) -> list[SignalResult]:
    """Every known signal (and any other the window or baseline holds) tested, in a stable order."""
    b_cat = baseline.categorical if baseline else {}
    b_num = baseline.numeric if baseline else {}
    categorical = [*CATEGORICAL_SIGNALS, *sorted((set(window.categorical) | set(b_cat)) - set(CATEGORICAL_SIGNALS))]
    numeric = [*NUMERIC_SIGNALS, *sorted((set(window.numeric) | set(b_num)) - set(NUMERIC_SIGNALS))]
    results = [compare_categorical(s, b_cat.get(s, {}), window.categorical.get(s, {}), thresholds)
               for s in categorical]
    results += [compare_numeric(s, b_num.get(s, []), window.numeric.get(s, []), thresholds) for s in numeric]
    return results


def set_gauges(results: list[SignalResult]) -> None:
    """``sovereign_drift_*`` from one check; a signal without enough data scores 0 with p-value 1."""
    for result in results:
        metrics.DRIFT_DETECTED.labels(signal=result.signal).set(1 if result.detected else 0)
        metrics.DRIFT_WINDOW_SAMPLES.labels(signal=result.signal).set(result.window_n)
        tests: dict[str, Statistic] = {t.test: t for t in result.tests}
        names = ("chi2",) if result.kind == "categorical" else ("ks", "psi")
        for name in names:
            test = tests.get(name)
            metrics.DRIFT_SCORE.labels(signal=result.signal, test=name).set(test.statistic if test else 0.0)
            if name != "psi":
                p_value = test.p_value if test and test.p_value is not None else 1.0
                metrics.DRIFT_P_VALUE.labels(signal=result.signal, test=name).set(p_value)


class DriftMonitor:
    """Flushes, checks and reports drift for one worker process.

    Args:
        settings: the ``[drift]`` section. store: an opened :class:`DriftStore`.
        recorder: the recorder to drain (the process-global one by default).
    """

    def __init__(self, settings: DriftSettings, store: DriftStore, recorder: DriftRecorder = RECORDER) -> None:
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.thresholds = Thresholds(alpha=settings.alpha, min_samples=settings.min_samples)
        self.report: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_check = 0.0

    def start(self) -> None:
        """Enable the recorder and start the background task."""
        self.recorder.enable(self.settings.max_buffer)
        self._task = asyncio.create_task(self._loop(), name="drift-monitor")

    async def close(self) -> None:
        """Stop the task, flush what is left, disable the recorder, close the store."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()
        except Exception:
            log.exception("drift: the last flush failed")
        finally:
            self.recorder.disable()
            await self.store.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_s)
            try:
                await self.flush()
                if time.monotonic() - self._last_check >= self.settings.check_s:
                    await self.check()
            except Exception:  # a failed round is logged; the next one retries
                log.exception("drift: flush or check failed")

    async def flush(self) -> int:
        """Move buffered observations to the database. Returns the number of rows written."""
        observations = self.recorder.drain()
        if not observations:
            return 0
        rows = await self.store.run(to_rows, observations)
        await self.store.insert(rows, time.time() - 2 * self.settings.window_s)
        return len(rows)

    async def check(self, now: float | None = None) -> dict[str, Any]:
        """Compare the window with the baseline (capturing one first when auto_baseline applies),
        set the gauges and keep the report. Returns the report (shape: :meth:`_report`)."""
        self._last_check = time.monotonic()
        now = time.time() if now is None else now
        window = await self.store.window(now - self.settings.window_s, now)
        baseline = await self.store.baseline(BASELINE_NAME)
        if baseline is None and self.settings.auto_baseline and window.oldest is not None \
                and window.oldest <= now - self.settings.window_s:
            if await self.store.save_baseline(snapshot(window), only_if_absent=True):
                log.info("drift: captured the first full window as the baseline")
            baseline = await self.store.baseline(BASELINE_NAME)
        results = await asyncio.to_thread(compare, window, baseline, self.thresholds)
        set_gauges(results)
        self.report = self._report(now, window, baseline, results)
        return self.report

    async def capture_baseline(self, since: float | None = None, now: float | None = None) -> dict[str, Any]:
        """Make the ``since`` seconds (default ``drift.window_s``) before ``now`` (default: now, Unix s)
        the baseline, after a flush.

        Returns:
            The new baseline's summary (:meth:`Baseline.summary`).

        Raises:
            InvalidRequestError: ``since`` is not positive, or the window holds no observation.
        """
        if since is not None and not since > 0:
            raise InvalidRequestError(f"since must be a positive number of seconds, got {since!r}.", param="since")
        await self.flush()
        now = time.time() if now is None else now
        window = await self.store.window(now - (since or self.settings.window_s), now)
        if not window.categorical and not window.numeric:
            raise InvalidRequestError("No traffic was recorded in that window; send some requests first.",
                                      param="since")
        baseline = snapshot(window)
        baseline.id = await self.store.save_baseline(baseline)
        return baseline.summary()

    def _report(self, now: float, window: Window, baseline: Baseline | None,
                results: list[SignalResult]) -> dict[str, Any]:
        return {
            "object": "drift.report", "checked_at": now, "window_s": self.settings.window_s,
            "baseline": baseline.summary() if baseline else None,
            "thresholds": {"alpha": self.thresholds.alpha, "min_cramers_v": self.thresholds.min_cramers_v,
                           "min_ks": self.thresholds.min_ks, "min_psi": self.thresholds.min_psi,
                           "min_samples": self.thresholds.min_samples},
            "drifted": [r.signal for r in results if r.detected],
            "signals": [r.to_dict() for r in results],
            "recorder": {"buffered": len(self.recorder.buffer), "dropped": self.recorder.dropped},
        }


async def start_monitor(settings: Settings) -> DriftMonitor:
    """Open ``data_dir/drift.sqlite`` and start a monitor. Raises StorageError."""
    store = DriftStore(settings.data_dir / "drift.sqlite")
    await store.open()
    monitor = DriftMonitor(settings.drift, store)
    monitor.start()
    return monitor


async def stop_monitor(monitor: DriftMonitor) -> None:
    """Close ``monitor``."""
    await monitor.close()
