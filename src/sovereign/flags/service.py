"""The flag service of one gateway process: effective flags, rollout splits, and the controller.

- **Effective flags** are the flags file (or the built-in seven) with the run-time values set
  through the admin API on top, and a flag under an active rollout at the rollout's percent.
- **Sync**: every ``flags.sync_s`` each process re-reads flag values and rollouts from the
  :class:`~sovereign.flags.store.ControlStore`, so every worker and host applies one split. A
  deployment rollout sets a :class:`~sovereign.backends.router.Canary` on its route's router.
- **Controller**: every ``rollout.check_s`` the process holding the ``rollout-controller`` lease
  judges each progressing rollout (:func:`~sovereign.flags.rollout.decide`) and moves it. Every
  start, step, analysis, decision and operator action is written to the audit log.

Errors: unknown flags, routes, deployments or rollouts raise NotFoundError (404); a change that
breaks the flag set (cycle, unknown dependency) or a second active rollout of one target raise
InvalidRequestError (400) / ConflictError (409); the store raises StorageError.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sovereign.backends.base import StartLimited
from sovereign.backends.router import Canary, Router
from sovereign.config import Settings
from sovereign.errors import ConfigError, ConflictError, InvalidRequestError, NotFoundError, SovereignError
from sovereign.evaluation.dataset import load_dataset
from sovereign.evaluation.gate import failures
from sovereign.flags.analysis import Arm, ArmStats, LocalMetrics, PrometheusMetrics
from sovereign.flags.bucketing import within
from sovereign.flags.evaluation import Evaluation, EvaluationContext, evaluate
from sovereign.flags.model import Flag, check_flags, load_flags_file
from sovereign.flags.rollout import Decision, GateEvaluator, RolloutSpec, RolloutState, decide
from sovereign.flags.store import ControlStore
from sovereign.observability import metrics

log = logging.getLogger("sovereign.rollout")
LEASE = "rollout-controller"
ACTIONS = ("pause", "resume", "promote", "abort")
ROLLBACK_REASONS = ("error_ratio", "p95", "p99", "ttft_p95", "manual", "eval_gate")


class FlagService:
    """Flags and rollouts of one process.

    Args:
        settings: ``flags`` and ``rollout`` sections are read.
        store: the shared control state.
        routers: public model name -> :class:`Router` (deployment rollouts split these).
        clock: Unix seconds (tests move it).
        gate_evaluator: runs rollouts' evaluation gates (None: a rollout with a gate is refused).
    """

    def __init__(self, settings: Settings, store: ControlStore, routers: Mapping[str, Router],
                 clock: Callable[[], float] = time.time, gate_evaluator: GateEvaluator | None = None) -> None:
        self.settings = settings
        self.store = store
        self.routers = routers
        self.clock = clock
        self.definitions = load_flags_file(settings.flags.file)
        self.flags: dict[str, Flag] = dict(self.definitions)
        self.rollouts: dict[str, tuple[RolloutSpec, RolloutState]] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.local = LocalMetrics()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.gate_evaluator = gate_evaluator
        self._gates: dict[str, asyncio.Task[dict[str, Any]]] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, engines: Iterable[object] = ()) -> None:
        """First sync; lower the slots / GPU layers of ``engines`` not yet started when
        ``batch_inference`` / ``triton_gpu_acceleration`` are off; then the background loop (sync
        every ``sync_s``, check every ``check_s``)."""
        await self.sync()
        anyone = EvaluationContext()
        slots = None if self.enabled("batch_inference", anyone) else 1
        gpu = None if self.enabled("triton_gpu_acceleration", anyone) else 0
        for engine in engines:
            if isinstance(engine, StartLimited) and (slots, gpu) != (None, None):
                engine.limit(n_parallel=slots, n_gpu_layers=gpu)
        self._task = asyncio.create_task(self._loop(), name="flags")

    async def close(self) -> None:
        for gate in self._gates.values():
            gate.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()

    async def _loop(self) -> None:
        last_check = 0.0
        while True:
            await asyncio.sleep(self.settings.flags.sync_s)
            try:
                await self.sync()
                if time.monotonic() - last_check >= self.settings.rollout.check_s:
                    last_check = time.monotonic()
                    if await self.store.acquire_lease(LEASE, self.owner, self.settings.rollout.lease_s):
                        await self.check()
            except SovereignError as exc:  # the store or Prometheus is down: keep the last state
                log.warning("flags sync or rollout check failed: %s", exc.message)

    # -- sync ---------------------------------------------------------------------------------
    async def sync(self) -> None:
        """Re-read values and rollouts; recompute effective flags; apply splits to the routers."""
        values = await self.store.flag_values()
        rollouts: dict[str, tuple[RolloutSpec, RolloutState]] = {}
        for target, (raw_spec, raw_state) in (await self.store.rollouts()).items():
            try:
                rollouts[target] = RolloutSpec.model_validate(raw_spec), RolloutState.from_json(raw_state)
            except (ValidationError, TypeError) as exc:  # a row this version cannot read: skip, never crash
                log.warning("rollout %s ignored: unreadable stored state (%s)", target, exc)
        try:
            self.flags = self._effective(values, rollouts)
        except ConfigError as exc:  # a stored value no longer fits the file: keep serving the last good set
            log.warning("flag values rejected: %s", exc.message)
        self.rollouts = rollouts
        for name, router in self.routers.items():
            router.canary = None
            rollout = rollouts.get(f"route:{name}")
            if rollout is None:
                continue
            spec, state = rollout
            if state.active or state.status == "promoted":
                router.canary = Canary(spec.candidate, state.percent,
                                       functools.partial(within, spec.target, percent=state.percent))
        for spec, state in rollouts.values():
            for reason in ROLLBACK_REASONS:  # a counter series born at 1 shows no increase(): start it at 0
                metrics.ROLLOUT_ROLLBACKS.labels(model=spec.metric_model, candidate=spec.candidate, reason=reason)
            metrics.ROLLOUT_CANDIDATE_PERCENT.labels(model=spec.metric_model, candidate=spec.candidate).set(
                state.percent if state.active or state.status == "promoted" else 0.0)

    def _effective(self, values: Mapping[str, dict[str, Any]],
                   rollouts: Mapping[str, tuple[RolloutSpec, RolloutState]]) -> dict[str, Flag]:
        flags = []
        for name, flag in self.definitions.items():
            merged = {**flag.model_dump(), **values.get(name, {})}
            rollout = rollouts.get(f"flag:{name}")
            if rollout is not None and rollout[1].active:
                merged.update(kind="percentage", enabled=True, percentage=rollout[1].percent)
            try:
                flags.append(Flag.model_validate(merged))
            except ValidationError as exc:
                raise ConfigError(f"flag {name!r}: {exc.errors()[0]['msg']}") from exc
        return check_flags(flags)

    # -- flags ----------------------------------------------------------------------------------
    def evaluate(self, name: str, ctx: EvaluationContext) -> Evaluation:
        """Evaluate flag ``name`` for ``ctx``. Raises NotFoundError for an unknown flag."""
        result = evaluate(self.flags, name, ctx)
        metrics.FLAG_EVALUATIONS.labels(flag=name, variant=result.variant, reason=result.reason).inc()
        return result

    def enabled(self, name: str, ctx: EvaluationContext) -> bool:
        """Whether ``name`` is on for ``ctx``; an unknown flag is on (gates default to today's behaviour)."""
        return name not in self.flags or self.evaluate(name, ctx).enabled

    def rolled_out_flags(self) -> list[str]:
        """Flags under an active rollout: the request flow records their variants' outcomes."""
        return [spec.candidate for spec, state in self.rollouts.values() if spec.kind == "flag" and state.active]

    async def set_flag(self, name: str, changes: dict[str, Any], actor: str) -> Flag:
        """Set run-time values of flag ``name`` (partial fields), persisted and audited.

        Raises:
            NotFoundError: unknown flag.
            InvalidRequestError: the change is invalid or breaks the set (cycle, unknown dependency).
        """
        if name not in self.definitions:
            raise NotFoundError(f"No flag named {name!r}; flags come from flags.file.", param="flag")
        async with self._lock:
            values = await self.store.flag_values()
            value = {**values.get(name, {}), **changes}
            try:
                self._effective({**values, name: value}, self.rollouts)
            except ConfigError as exc:
                raise InvalidRequestError(f"Flag {name!r} not changed: {exc.message}", param="flag") from exc
            await self.store.set_flag_value(name, value, actor)
            await self.store.audit(f"flag:{name}", "flag_set", changes, actor)
            await self.sync()
        return self.flags[name]

    # -- rollouts -------------------------------------------------------------------------------
    def arms(self, spec: RolloutSpec) -> tuple[Arm, Arm]:
        """The candidate and stable arms of ``spec``. Raises NotFoundError for an unknown route,
        deployment or flag, InvalidRequestError for a route with no other deployment."""
        if spec.kind == "flag":
            if spec.candidate not in self.definitions:
                raise NotFoundError(f"No flag named {spec.candidate!r}.", param="flag")
            return Arm("candidate", "flag", spec.candidate, ("on",)), Arm("stable", "flag", spec.candidate, ("off",))
        assert spec.route is not None
        router = self.routers.get(spec.route)
        if router is None:
            raise NotFoundError(
                f"No route {spec.route!r} with deployments; routes: {', '.join(self.routers) or 'none configured'}.",
                param="route")
        names = [d.name for d in router.deployments]
        if spec.candidate not in names:
            raise NotFoundError(f"Route {spec.route!r} has no deployment {spec.candidate!r}; it has "
                                f"{', '.join(names)}.", param="candidate")
        stable = tuple(n for n in names if n != spec.candidate)
        if not stable:
            raise InvalidRequestError(f"Route {spec.route!r} has no stable deployment besides {spec.candidate!r}.",
                                      param="candidate")
        return (Arm("candidate", "deployment", spec.route, (spec.candidate,)),
                Arm("stable", "deployment", spec.route, stable))

    async def analyse(self, spec: RolloutSpec, state: RolloutState) -> tuple[ArmStats, ArmStats]:
        """Candidate and stable figures over the current stage (Prometheus when configured)."""
        candidate, stable = self.arms(spec)
        url = spec.prometheus_url or self.settings.rollout.prometheus_url
        if url:
            source = PrometheusMetrics(url)
            try:
                window = self.clock() - state.stage_started_at
                return await source.stats(candidate, window), await source.stats(stable, window)
            finally:
                await source.aclose()
        return self.local.stats(candidate, state.baseline), self.local.stats(stable, state.baseline)

    def plan(self, spec: RolloutSpec) -> list[dict[str, Any]]:
        """The stages ``spec`` would walk: percent and earliest start (seconds from now)."""
        return [{"step": i, "percent": p, "starts_after_s": i * spec.interval_s} for i, p in enumerate(spec.steps)]

    async def start_rollout(self, spec: RolloutSpec, actor: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Start ``spec`` at its first step, or (``dry_run``) return the plan and the current figures.

        Raises:
            NotFoundError / InvalidRequestError: see :meth:`arms`.
            ConflictError: an active rollout of the same target exists.
            DatasetError (400): the gate's dataset is missing or invalid (file and line).
        """
        self.arms(spec)
        if spec.gate is not None:
            if self.gate_evaluator is None:
                raise InvalidRequestError("Evaluation gates need document memory (rag.enabled).", param="gate")
            load_dataset(Path(spec.gate.dataset), spec.gate.limit)
        current = self.rollouts.get(spec.target)
        if dry_run:
            state = RolloutState(percent=0.0, stage_started_at=self.clock() - spec.interval_s)
            cand, stable = await self.analyse(spec, state)
            return {"dry_run": True, "target": spec.target, "spec": spec.model_dump(), "plan": self.plan(spec),
                    "analysis": {"candidate": cand.summary(), "stable": stable.summary()},
                    "active": current[1].to_json() if current and current[1].active else None}
        async with self._lock:
            await self.sync()
            current = self.rollouts.get(spec.target)
            if current is not None and current[1].active:
                raise ConflictError(f"A rollout of {spec.target} is already {current[1].status}; "
                                    "abort or finish it first.")
            now = self.clock()
            gated_now = spec.gate is not None and spec.gate.before_stage == 0
            state = RolloutState(percent=0.0 if gated_now else spec.steps[0], started_at=now, stage_started_at=now,
                                 updated_at=now, baseline=self._baseline(spec))
            if spec.gate is not None:
                state.gate = {"status": "pending" if gated_now else "waiting", "stage": spec.gate.before_stage}
            await self.store.save_rollout(spec.target, spec.model_dump(), state.to_json())
            await self.store.audit(spec.target, "started", {"spec": spec.model_dump(), "percent": state.percent},
                                   actor)
            log.info("rollout started", extra={"target": spec.target, "candidate": spec.candidate,
                                               "percent": state.percent})
            await self.sync()
        return self.describe(spec.target)

    def _baseline(self, spec: RolloutSpec) -> dict[str, Any]:
        return self.local.snapshot(self.arms(spec))

    def _get(self, target: str) -> tuple[RolloutSpec, RolloutState]:
        if target not in self.rollouts:
            raise NotFoundError(f"No rollout of {target}.", param="target")
        return self.rollouts[target]

    def describe(self, target: str) -> dict[str, Any]:
        """One rollout as JSON: spec, state (baseline left out) and plan."""
        spec, state = self._get(target)
        shown = {k: v for k, v in state.to_json().items() if k != "baseline"}
        return {"target": target, "spec": spec.model_dump(), "state": shown, "plan": self.plan(spec)}

    async def act(self, target: str, action: str, actor: str) -> dict[str, Any]:
        """An operator's ``pause``, ``resume``, ``promote`` (to 100 % now) or ``abort`` (back to stable).

        Raises:
            NotFoundError: no rollout of ``target``; InvalidRequestError: unknown action;
            ConflictError: the action does not apply to the rollout's status.
        """
        if action not in ACTIONS:
            raise InvalidRequestError(f"Unknown action {action!r}; one of {', '.join(ACTIONS)}.", param="action")
        async with self._lock:
            await self.sync()
            spec, state = self._get(target)
            allowed = {"pause": {"progressing"}, "resume": {"paused"}, "promote": {"progressing", "paused"},
                       "abort": {"progressing", "paused", "promoted"}}[action]
            if state.status not in allowed:
                raise ConflictError(f"Cannot {action} a rollout that is {state.status}.")
            now = self.clock()
            if action in ("promote", "abort") and target in self._gates:
                self._gates.pop(target).cancel()
                state.gate["status"] = f"skipped: {action} by {actor}"
            if action == "pause":
                state.status, state.reason = "paused", f"paused by {actor}"
            elif action == "resume":
                state.status, state.reason = "progressing", None
                state.stage_started_at, state.baseline = now, self._baseline(spec)
            elif action == "promote":
                await self._promote(spec, state, now, final=True)
                state.reason = f"promoted by {actor}"
            else:
                self._roll_back(spec, state, "manual", f"aborted by {actor}")
                state.status = "aborted"
            state.updated_at = now
            await self._save(spec, state, action, {"reason": state.reason}, actor)
        return self.describe(target)

    async def _save(self, spec: RolloutSpec, state: RolloutState, kind: str, detail: dict[str, Any],
                    actor: str) -> None:
        await self.store.save_rollout(spec.target, spec.model_dump(), state.to_json())
        await self.store.audit(spec.target, kind, {**detail, "percent": state.percent, "status": state.status},
                               actor)
        if spec.kind == "flag" and not state.active:  # the final percent becomes the flag's own value
            values = await self.store.flag_values()
            value = {**values.get(spec.candidate, {}), "kind": "percentage", "enabled": True,
                     "percentage": state.percent}
            await self.store.set_flag_value(spec.candidate, value, actor)
        await self.sync()

    async def _promote(self, spec: RolloutSpec, state: RolloutState, now: float, *, final: bool) -> None:
        metrics.ROLLOUT_PROMOTIONS.labels(model=spec.metric_model, candidate=spec.candidate).inc()
        state.step = len(spec.steps) - 1 if final else state.step + 1
        state.percent = spec.steps[state.step]
        state.stage_started_at, state.baseline = now, self._baseline(spec)
        if state.step == len(spec.steps) - 1:
            state.status = "promoted"

    def _roll_back(self, spec: RolloutSpec, state: RolloutState, reason: str, detail: str) -> None:
        metrics.ROLLOUT_ROLLBACKS.labels(model=spec.metric_model, candidate=spec.candidate, reason=reason).inc()
        state.status, state.percent, state.reason = "rolled_back", 0.0, detail
        log.warning("rollout rolled back", extra={"target": spec.target, "candidate": spec.candidate,
                                                  "reason": reason, "detail": detail})

    # -- the controller -------------------------------------------------------------------------
    async def check(self) -> list[Decision]:
        """Judge every progressing rollout once and act (the lease holder calls this)."""
        decisions = []
        for target in list(self.rollouts):
            async with self._lock:
                spec, state = self.rollouts[target]
                if state.status != "progressing":
                    continue
                if state.gate.get("status") in ("pending", "running"):
                    await self._check_gate(spec, state)
                    continue
                cand, stable = await self.analyse(spec, state)
                now = self.clock()
                decision = decide(spec, state, cand, stable, now)
                decisions.append(decision)
                repeated = state.analysis.get("decision") == decision.action
                state.analysis = {"at": now, "step": state.step, "stage_percent": state.percent,
                                  "candidate": cand.summary(), "stable": stable.summary(),
                                  "decision": decision.action, "detail": decision.detail}
                state.updated_at = now
                if decision.action == "rollback":
                    self._roll_back(spec, state, decision.breaches[0], decision.detail)
                elif decision.action == "promote" and spec.gate is not None and (
                        state.gate.get("status") == "waiting" and state.step + 1 == spec.gate.before_stage):
                    state.gate["status"] = "pending"  # the next stage is gated: evaluate first
                elif decision.action == "promote":
                    await self._promote(spec, state, now, final=False)
                elif decision.action == "inconclusive" and (
                        now - state.stage_started_at >= spec.interval_s * spec.max_wait_intervals):
                    state.status = "paused"
                    state.reason = f"inconclusive: {decision.detail}"
                    log.warning("rollout paused: inconclusive", extra={"target": target, "detail": decision.detail})
                if state.status != "progressing" or decision.action == "promote" or (
                        decision.action == "hold" and not repeated):
                    await self._save(spec, state, decision.action, state.analysis, "controller")
                else:  # waiting, or the same hold again: the state moves, the audit log keeps to decisions
                    await self.store.save_rollout(spec.target, spec.model_dump(), state.to_json())
        return decisions

    async def _check_gate(self, spec: RolloutSpec, state: RolloutState) -> None:
        """Start the gate's evaluation (in the background), or, when it has finished, move the rollout
        to the gated stage (bounds met) or abort it (missed, or the evaluation could not run)."""
        assert spec.gate is not None and self.gate_evaluator is not None
        now = self.clock()
        task = self._gates.get(spec.target)
        if task is None:
            model = spec.gate.model or spec.route or ""
            deployment = spec.candidate if spec.kind == "deployment" else None
            self._gates[spec.target] = asyncio.create_task(self.gate_evaluator(spec.gate, model, deployment),
                                                           name=f"eval-gate {spec.target}")
            state.gate.update(status="running", started_at=now, model=model, deployment=deployment)
            state.updated_at = now
            await self._save(spec, state, "gate_started", {"gate": state.gate}, "controller")
            return
        if not task.done():
            return
        del self._gates[spec.target]
        try:
            result = task.result()
            missed = failures(result["metrics"], spec.gate.minimum, spec.gate.maximum)
            state.gate.update(metrics=result["metrics"], dataset=result["dataset"]["sha256"])
        except Exception as exc:  # a gate that cannot run must not let the candidate through
            log.warning("evaluation gate of %s could not run: %s", spec.target, exc)
            why = exc.message if isinstance(exc, SovereignError) else repr(exc)
            missed = [f"the evaluation could not run: {why}"]
        state.gate.update(status="failed" if missed else "passed", failures=missed, finished_at=now)
        state.updated_at = now
        if missed:
            self._roll_back(spec, state, "eval_gate", "evaluation gate failed: " + "; ".join(missed))
            state.status = "aborted"
        else:
            state.step = spec.gate.before_stage
            state.percent = spec.steps[state.step]
            state.stage_started_at, state.baseline = now, self._baseline(spec)
        await self._save(spec, state, "gate_failed" if missed else "gate_passed", {"gate": state.gate}, "controller")
