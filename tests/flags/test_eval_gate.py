"""A rollout's evaluation gate in the controller (logic, with a scripted evaluator; the live gate
on the real engine is in tests/evaluation/test_eval_gateway.py).

Bad input tried: a gate whose dataset does not exist, a gate naming an unknown metric, a gate on a
stage the rollout does not have, a gate without any evaluator (document memory off), an evaluator
that raises.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sovereign.config import load_settings
from sovereign.errors import EngineUnavailableError, InvalidRequestError
from sovereign.evaluation.gate import EvalGate
from sovereign.flags.service import FlagService
from sovereign.flags.store import SqliteControlStore
from tests.flags.test_rollout_logic import Clock, router, spec, traffic

pytestmark = pytest.mark.anyio


class Scripted:
    """An evaluator returning ``metrics`` (or raising ``error``) after ``release`` is set."""

    def __init__(self, metrics: dict[str, float | None] | None = None, error: Exception | None = None) -> None:
        self.metrics, self.error = metrics or {}, error
        self.calls: list[tuple[str, str | None]] = []
        self.release = asyncio.Event()

    async def __call__(self, gate: EvalGate, model: str, deployment: str | None) -> dict[str, Any]:
        self.calls.append((model, deployment))
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return {"metrics": self.metrics, "dataset": {"sha256": "abc"}}


async def gated(tmp_path: Path, evaluator: Scripted | None, model: str) -> tuple[FlagService, Clock, Any]:
    (tmp_path / "q.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    clock, routers = Clock(), {model: router(model)}
    svc = FlagService(load_settings(), await SqliteControlStore.open(tmp_path / "c.sqlite3"), routers, clock=clock,
                      gate_evaluator=evaluator)
    await svc.sync()
    return svc, clock, routers[model]


async def settle(svc: FlagService, target: str, status: str) -> dict[str, Any]:
    for _ in range(200):
        await svc.check()
        gate = svc.rollouts[target][1].gate
        if gate["status"] == status:
            return gate
        await asyncio.sleep(0.01)
    raise AssertionError(f"gate never reached {status}: {svc.rollouts[target][1].gate}")


async def test_no_canary_traffic_until_the_gate_passes(tmp_path: Path) -> None:
    evaluator = Scripted({"hit_at_5": 0.9, "grounded_rate": 0.8})
    svc, _clock, route = await gated(tmp_path, evaluator, "m-gate-pass")
    gate = {"dataset": str(tmp_path / "q.jsonl"), "minimum": {"hit_at_5": 0.8}, "model": "sovereign-rag"}
    await svc.start_rollout(spec("m-gate-pass", gate=gate), "test")
    state = svc.rollouts["route:m-gate-pass"][1]
    assert state.percent == 0 and state.gate["status"] == "pending" and route.canary.percent == 0
    await svc.check()  # starts the evaluation in the background
    assert svc.rollouts["route:m-gate-pass"][1].gate["status"] == "running"
    assert evaluator.calls == [("sovereign-rag", "cand")]  # the gate's model, pinned to the candidate
    await svc.check()
    assert svc.rollouts["route:m-gate-pass"][1].percent == 0  # still evaluating: nothing moved
    evaluator.release.set()
    passed = await settle(svc, "route:m-gate-pass", "passed")
    assert passed["metrics"]["hit_at_5"] == 0.9 and passed["failures"] == []
    state = svc.rollouts["route:m-gate-pass"][1]
    assert state.percent == 10 and state.step == 0 and route.canary.percent == 10
    kinds = [e["kind"] for e in await svc.store.events("route:m-gate-pass")]
    assert kinds == ["started", "gate_started", "gate_passed"]
    await svc.close()


@pytest.mark.parametrize("failing", ["bounds", "error"])
async def test_a_failed_gate_aborts_before_traffic_moves(tmp_path: Path, failing: str) -> None:
    evaluator = (Scripted({"hit_at_5": 0.5}) if failing == "bounds"
                 else Scripted(error=EngineUnavailableError("candidate down")))
    model = f"m-gate-{failing}"
    svc, _clock, route = await gated(tmp_path, evaluator, model)
    gate = {"dataset": str(tmp_path / "q.jsonl"), "minimum": {"hit_at_5": 0.8}}
    await svc.start_rollout(spec(model, gate=gate), "test")
    evaluator.release.set()
    failed = await settle(svc, f"route:{model}", "failed")
    state = svc.rollouts[f"route:{model}"][1]
    assert state.status == "aborted" and state.percent == 0 and "evaluation gate failed" in (state.reason or "")
    expected = "hit_at_5 0.5 < 0.8" if failing == "bounds" else "the evaluation could not run: candidate down"
    assert failed["failures"] == [expected]
    assert evaluator.calls == [(model, "cand")]  # no gate model: the route's own
    assert route.canary is None or route.canary.percent == 0
    await svc.close()


async def test_a_later_stage_gate_holds_the_promotion(tmp_path: Path) -> None:
    evaluator = Scripted({"hit_at_5": 1.0})
    svc, clock, _route = await gated(tmp_path, evaluator, "m-gate-later")
    gate = {"dataset": str(tmp_path / "q.jsonl"), "minimum": {"hit_at_5": 0.8}, "before_stage": 1}
    await svc.start_rollout(spec("m-gate-later", gate=gate), "test")
    assert svc.rollouts["route:m-gate-later"][1].percent == 10
    traffic("m-gate-later", "cand", 12)
    traffic("m-gate-later", "stable", 50)
    clock.now += 61
    await svc.check()  # the stage passed: the next one is gated, so evaluate instead of promoting
    state = svc.rollouts["route:m-gate-later"][1]
    assert state.percent == 10 and state.gate["status"] == "pending"
    evaluator.release.set()
    await settle(svc, "route:m-gate-later", "passed")
    assert svc.rollouts["route:m-gate-later"][1].percent == 50
    await svc.close()


async def test_bad_gates_are_refused(tmp_path: Path) -> None:
    svc, _clock, _route = await gated(tmp_path, Scripted(), "m-gate-bad")
    with pytest.raises(InvalidRequestError, match="cannot read the dataset"):
        await svc.start_rollout(spec("m-gate-bad", gate={"dataset": str(tmp_path / "nope.jsonl")}), "test")
    with pytest.raises(ValidationError, match="before_stage"):
        spec("m-gate-bad", gate={"dataset": "q.jsonl", "before_stage": 3})
    with pytest.raises(ValidationError, match="Unknown metric"):
        spec("m-gate-bad", gate={"dataset": "q.jsonl", "minimum": {"recall": 1}})
    await svc.close()
    (tmp_path / "bare").mkdir()
    bare, _clock, _route = await gated(tmp_path / "bare", None, "m-gate-bare")
    with pytest.raises(InvalidRequestError, match="need document memory"):
        await bare.start_rollout(spec("m-gate-bare", gate={"dataset": str(tmp_path / "q.jsonl")}), "test")
    await bare.close()
