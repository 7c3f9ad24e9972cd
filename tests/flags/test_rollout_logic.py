"""Rollout logic on real SQLite (and the embedded PostgreSQL): decisions, the controller's moves,
the audit log, restarts, leases, stickiness on a real Router, and PromQL-style quantiles.

Metrics are driven by incrementing the real ``sovereign_deployment_*`` families (the live tests in
``test_rollout_live.py`` drive them with real requests). Bad input tried: steps not ending at 100,
decreasing steps, a deployment rollout without a route, an unknown route, an unknown candidate, a
route with no stable deployment, a second active rollout of one target, resume of a progressing
rollout, an unknown action, a flag change that makes a cycle.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sovereign.backends.breaker import CircuitBreaker
from sovereign.backends.router import Deployment, Router
from sovereign.config import load_settings
from sovereign.errors import ConflictError, InvalidRequestError, NotFoundError
from sovereign.flags.analysis import ArmStats, histogram_quantile
from sovereign.flags.rollout import RolloutSpec, RolloutState, decide
from sovereign.flags.service import FlagService
from sovereign.flags.store import ControlStore, PostgresControlStore, SqliteControlStore
from sovereign.observability import metrics

pytestmark = pytest.mark.anyio
INF = float("inf")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Idle:
    """A backend the router never calls in these tests (order() and metrics only)."""

    def __init__(self, name: str) -> None:
        self.name = name


def router(model: str) -> Router:
    deps = [Deployment(n, Idle(n), CircuitBreaker(n, 3, 60), 4096, w, "vllm")  # type: ignore[arg-type]
            for n, w in (("stable", 1.0), ("cand", 0.0))]
    return Router(model, deps, rng=random.Random(0))


def traffic(model: str, deployment: str, ok: int, errors: int = 0, seconds: float = 0.1) -> None:
    for _ in range(ok):
        metrics.DEPLOYMENT_REQUESTS.labels(model=model, deployment=deployment, outcome="ok").inc()
        metrics.DEPLOYMENT_DURATION.labels(model=model, deployment=deployment).observe(seconds)
        metrics.DEPLOYMENT_TTFT.labels(model=model, deployment=deployment).observe(seconds / 2)
    for _ in range(errors):
        metrics.DEPLOYMENT_REQUESTS.labels(model=model, deployment=deployment, outcome="error").inc()


def spec(model: str, **kw: Any) -> RolloutSpec:
    base: dict[str, Any] = {"route": model, "candidate": "cand", "steps": [10, 50, 100], "interval_s": 60,
                            "min_requests": 10, "max_p95_s": 1.0, "max_p99_s": 2.0}
    return RolloutSpec.model_validate({**base, **kw})


async def service(path: Path, routers: dict[str, Router], clock: Clock) -> FlagService:
    store = await SqliteControlStore.open(path)
    svc = FlagService(load_settings(), store, routers, clock=clock)
    await svc.sync()
    return svc


# -- pure parts ---------------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = {0.1: 10.0, 0.5: 60.0, 1.0: 90.0, INF: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert histogram_quantile(0.95, buckets) == 1.0  # rank in +Inf: the highest finite bound
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None


@pytest.mark.parametrize("bad", [{"steps": [10, 50]}, {"steps": [50, 10, 100]}, {"route": None},
                                 {"steps": [0, 100]}, {"interval_s": 0}])
def test_bad_specs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        spec("m", **bad)


def stats(ok: int, errors: int = 0, seconds: float = 0.1) -> ArmStats:
    le = {0.1: 0.0, 0.25: 0.0, 1.0: 0.0, 5.0: 0.0, INF: 0.0}
    for bound in le:
        le[bound] = float(ok) if seconds <= bound else 0.0
    return ArmStats(ok=ok, errors=errors, duration=le, ttft=dict(le))


def test_decide_covers_every_action() -> None:
    s, state = spec("m"), RolloutState(stage_started_at=0.0)
    assert decide(s, state, stats(20, 5), stats(100), now=1).action == "rollback"
    assert decide(s, state, stats(20, 5), stats(100), now=1).breaches == ("error_ratio",)
    assert decide(s, state, stats(20, seconds=3.0), stats(100), now=1).breaches == ("p95", "p99")
    assert decide(s, state, stats(20, 5), stats(100, 30), now=1).action == "hold"  # stable as bad: not the candidate
    assert decide(s, state, stats(20), stats(100), now=30).action == "wait"
    assert decide(s, state, stats(20), stats(100), now=61).action == "promote"
    assert decide(s, state, stats(3, 3), stats(100), now=1).action == "wait"  # too few to judge, even all errors
    assert decide(s, state, stats(3), stats(100), now=61).action == "inconclusive"  # never promotes


# -- the controller on SQLite --------------------------------------------------------------------------


async def test_healthy_candidate_promotes_stage_by_stage_and_audits(tmp_path: Path) -> None:
    clock, routers = Clock(), {"m-healthy": router("m-healthy")}
    svc = await service(tmp_path / "c.sqlite3", routers, clock)
    await svc.start_rollout(spec("m-healthy"), "test")
    assert routers["m-healthy"].canary is not None and routers["m-healthy"].canary.percent == 10
    for percent in (50, 100):
        traffic("m-healthy", "cand", 12)
        traffic("m-healthy", "stable", 50)
        clock.now += 61
        await svc.check()
        assert svc.rollouts["route:m-healthy"][1].percent == percent
    assert svc.rollouts["route:m-healthy"][1].status == "promoted"
    assert routers["m-healthy"].canary is not None and routers["m-healthy"].canary.percent == 100
    kinds = [e["kind"] for e in await svc.store.events("route:m-healthy")]
    assert kinds == ["started", "promote", "promote"]
    await svc.close()


async def test_breach_rolls_back_at_once_and_no_traffic_pauses(tmp_path: Path) -> None:
    clock, routers = Clock(), {"m-bad": router("m-bad"), "m-idle": router("m-idle")}
    svc = await service(tmp_path / "c.sqlite3", routers, clock)
    before = metrics.ROLLOUT_ROLLBACKS.labels(model="m-bad", candidate="cand", reason="error_ratio")._value.get()
    await svc.start_rollout(spec("m-bad"), "test")
    await svc.start_rollout(spec("m-idle", max_wait_intervals=2), "test")
    traffic("m-bad", "cand", 16, errors=4)  # 20 % errors
    traffic("m-bad", "stable", 80)
    clock.now += 5  # well inside the interval
    await svc.check()
    state = svc.rollouts["route:m-bad"][1]
    assert (state.status, state.percent) == ("rolled_back", 0.0)
    assert routers["m-bad"].canary is None  # every user back on stable
    assert routers["m-bad"].order("anyone")[0].name == "stable"
    assert metrics.ROLLOUT_ROLLBACKS.labels(model="m-bad", candidate="cand", reason="error_ratio")._value.get() \
        == before + 1
    clock.now += 60
    await svc.check()
    assert svc.rollouts["route:m-idle"][1].status == "progressing"  # inconclusive: waits, not promoted
    clock.now += 60
    await svc.check()
    idle = svc.rollouts["route:m-idle"][1]
    assert (idle.status, idle.percent) == ("paused", 10) and idle.reason.startswith("inconclusive")
    await svc.close()


async def test_an_unreadable_stored_rollout_is_skipped_not_fatal(tmp_path: Path) -> None:
    """Bad input: a rollout row whose spec this version cannot read (a newer writer, a hand edit)."""
    store = await SqliteControlStore.open(tmp_path / "c.sqlite3")
    await store.save_rollout("route:weird", {"a": 2}, {"status": "paused"})
    await store.close()
    svc = await service(tmp_path / "c.sqlite3", {}, Clock())
    assert "route:weird" not in svc.rollouts
    await svc.close()


async def test_restart_resumes_where_it_was(tmp_path: Path) -> None:
    clock = Clock()
    svc = await service(tmp_path / "c.sqlite3", {"m-restart": router("m-restart")}, clock)
    await svc.start_rollout(spec("m-restart"), "test")
    traffic("m-restart", "cand", 12)
    clock.now += 61
    await svc.check()
    await svc.close()
    again = {"m-restart": router("m-restart")}
    svc = await service(tmp_path / "c.sqlite3", again, clock)  # a new process on the same file
    _, state = svc.rollouts["route:m-restart"]
    assert (state.status, state.step, state.percent) == ("progressing", 1, 50)
    assert again["m-restart"].canary is not None and again["m-restart"].canary.percent == 50
    await svc.close()


async def test_operator_actions_and_their_errors(tmp_path: Path) -> None:
    clock, routers = Clock(), {"m-ops": router("m-ops")}
    svc = await service(tmp_path / "c.sqlite3", routers, clock)
    with pytest.raises(NotFoundError):
        await svc.start_rollout(spec("ghost"), "t")
    with pytest.raises(NotFoundError):
        await svc.start_rollout(spec("m-ops", candidate="ghost"), "t")
    await svc.start_rollout(spec("m-ops"), "t")
    with pytest.raises(ConflictError):
        await svc.start_rollout(spec("m-ops"), "t")
    with pytest.raises(ConflictError):
        await svc.act("route:m-ops", "resume", "t")
    with pytest.raises(InvalidRequestError):
        await svc.act("route:m-ops", "explode", "t")
    assert (await svc.act("route:m-ops", "pause", "t"))["state"]["status"] == "paused"
    traffic("m-ops", "cand", 30, errors=30)
    clock.now += 61
    await svc.check()
    assert svc.rollouts["route:m-ops"][1].status == "paused"  # a paused rollout is not judged
    assert (await svc.act("route:m-ops", "promote", "t"))["state"]["percent"] == 100
    assert (await svc.act("route:m-ops", "abort", "t"))["state"]["status"] == "aborted"
    assert routers["m-ops"].canary is None
    await svc.start_rollout(spec("m-ops"), "t")  # a finished rollout can be replaced
    await svc.close()


async def test_flag_changes_persist_and_a_cycle_is_refused(tmp_path: Path) -> None:
    svc = await service(tmp_path / "c.sqlite3", {}, Clock())
    with pytest.raises(InvalidRequestError, match="cycle"):
        await svc.set_flag("ai_inference", {"depends_on": ["semantic_cache"]}, "t")
    await svc.set_flag("semantic_cache", {"kind": "percentage", "percentage": 30}, "t")
    await svc.close()
    svc = await service(tmp_path / "c.sqlite3", {}, Clock())
    assert svc.flags["semantic_cache"].percentage == 30
    assert [e["kind"] for e in await svc.store.events("flag:semantic_cache")] == ["flag_set"]
    await svc.close()


def test_canary_split_is_sticky_per_user_on_a_real_router() -> None:
    from sovereign.backends.router import Canary
    from sovereign.flags.bucketing import within

    r = router("m-sticky")
    r.canary = Canary("cand", 25, lambda user: within("route:m-sticky", user, 25))
    firsts = {u: r.order(u)[0].name for u in (f"user-{i}" for i in range(4000))}
    assert all(r.order(u)[0].name == first for u, first in list(firsts.items())[:200])  # sticky
    assert 0.22 < sum(v == "cand" for v in firsts.values()) / 4000 < 0.28
    assert all(r.order(u)[1].name == ("stable" if f == "cand" else "cand") for u, f in list(firsts.items())[:50])


# -- the store contract on both databases ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlStore]:
    if request.param == "sqlite":
        opened: ControlStore = await SqliteControlStore.open(tmp_path / "c.sqlite3")
    else:
        opened = await PostgresControlStore.open(request.getfixturevalue("pg_uri"))
    yield opened
    await opened.close()


async def test_store_contract(store: ControlStore) -> None:
    assert store.schema_version == 2  # type: ignore[attr-defined]  (flags, keys)
    target = f"route:contract-{random.randrange(10**9)}"
    spec = RolloutSpec(route=target.removeprefix("route:"), candidate="c").model_dump()
    await store.save_rollout(target, spec, RolloutState().to_json())
    paused = RolloutState(status="paused").to_json()
    await store.save_rollout(target, {**spec, "min_requests": 7}, paused)
    assert (await store.rollouts())[target] == ({**spec, "min_requests": 7}, paused)
    await store.audit(target, "started", {"x": 1}, "me")
    await store.audit(target, "promote", {"x": 2}, "me")
    assert [e["kind"] for e in await store.events(target)] == ["started", "promote"]
    await store.set_flag_value("f", {"enabled": False}, "me")
    assert (await store.flag_values())["f"] == {"enabled": False}
    lease = f"lease-{random.randrange(10**9)}"
    assert await store.acquire_lease(lease, "one", 30)
    assert not await store.acquire_lease(lease, "two", 30)  # held by another
    assert await store.acquire_lease(lease, "one", 30)  # renewed by its holder
    assert await store.acquire_lease(lease, "two", -1) is False
    assert await store.acquire_lease(lease, "one", -1)  # expires now...
    assert await store.acquire_lease(lease, "two", 30)  # ...and another takes it
