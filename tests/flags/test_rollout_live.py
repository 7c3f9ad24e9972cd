"""Metric-gated rollouts end to end: a live gateway whose route ``canary`` has the embedded engine
(SmolLM2 on llama-server, stable) and the fault-injection engine (candidate), driven by
``sovereign rollout`` and judged from the gateway's own metrics or from a real Prometheus server
(Debian ``prometheus``) scraping the gateway every second.

Short intervals (seconds), bounded load: a few threads send chat requests from distinct users until
stopped. Bad input and bad candidates tried: a candidate failing 20 % of its requests, a slow
candidate (p95 breach), a candidate that gets no traffic, a second start of an active rollout (409),
an unknown candidate (404), neither --route nor --flag (exit 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovereign.testing.canary import ROUTE, canary_config
from sovereign.testing.prometheus import prometheus_server
from tests.conftest import LiveServer, start_server
from tests.integration.test_remote_engines import Proc, arm
from tests.integration.test_remote_engines import fault as fault

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fault: Proc) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("rollout")
    (tmp / "sovereign.toml").write_text(canary_config(fault.url))
    server = start_server(tmp / "data", {"SOVEREIGN_CONFIG": str(tmp / "sovereign.toml")})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(gateway: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prometheus_server(tmp_path_factory.mktemp("prom"), [f"127.0.0.1:{gateway.port}"], scrape_s=1) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh(gateway: LiveServer, fault: Proc) -> Iterator[None]:
    """Every test starts from a healthy candidate and no active rollout of the route."""
    httpx.post(fault.url + "/_reset").raise_for_status()
    yield
    httpx.post(gateway.url + "/admin/rollouts/abort", json={"target": f"route:{ROUTE}"})


class Load:
    """``threads`` clients sending 2-token chats from new users until stopped; counts by deployment."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url, self.stop_at = url, threading.Event()
        self.seen: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def _run(self, k: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = 0
            while not self.stop_at.is_set():
                i += 1
                body = {"model": ROUTE, "user": f"user-{k}-{i}", "max_tokens": 2,
                        "messages": [{"role": "user", "content": "Hi"}]}
                r = client.post(self.url + "/v1/chat/completions", json=body)
                ok = r.status_code == 200
                self.seen[r.json()["sovereign"]["route"]["deployment"] if ok else str(r.status_code)] += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_at.set()
        for t in self.threads:
            t.join(timeout=60)


def rollout(gateway: LiveServer, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sovereign", "rollout", *args, "--url", gateway.url],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def start(gateway: LiveServer, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return rollout(gateway, "start", "--route", ROUTE, "--candidate", "cand", "--force", "--wait", "--poll", "0.3s",
                   *args, timeout=timeout)


def status(gateway: LiveServer) -> dict[str, Any]:
    return httpx.get(f"{gateway.url}/admin/rollouts/route:{ROUTE}").json()


def sample(gateway: LiveServer, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(gateway.url + "/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_healthy_candidate_promotes_through_every_stage(gateway: LiveServer) -> None:
    with Load(gateway.url) as load:
        done = start(gateway, "--steps", "20,50,100", "--interval", "3s", "--min-requests", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    state = status(gateway)
    assert state["state"]["status"] == "promoted" and state["state"]["percent"] == 100
    assert [e["kind"] for e in state["events"]] == ["started", "promote", "promote"]
    assert load.seen["cand"] > 10 and load.seen["local"] > 0 and set(load.seen) <= {"cand", "local"}
    shown = rollout(gateway, "status", "--route", ROUTE)
    assert "Analysis per stage" in shown.stdout and "promoted" in shown.stdout
    assert sample(gateway, "sovereign_rollout_candidate_percent", model=ROUTE, candidate="cand") == 100


def test_failing_candidate_rolls_back_within_one_interval(gateway: LiveServer, fault: Proc) -> None:
    arm(fault, "status", status=500, ratio=0.2)
    before = sample(gateway, "sovereign_rollout_rollbacks_total", model=ROUTE, reason="error_ratio")
    with Load(gateway.url):
        done = start(gateway, "--steps", "50,100", "--interval", "20s", "--min-requests", "10")
    assert done.returncode == 3, done.stdout + done.stderr  # rolled back
    state = status(gateway)
    events = {e["kind"]: e for e in state["events"]}
    took = events["rollback"]["at"] - events["started"]["at"]
    assert took < 20, f"rolled back after {took:.1f}s, more than one interval"
    assert state["state"]["percent"] == 0 and "error_ratio" in state["state"]["reason"]
    assert events["rollback"]["detail"]["candidate"]["error_ratio"] > 0.05
    assert sample(gateway, "sovereign_rollout_rollbacks_total", model=ROUTE, reason="error_ratio") == before + 1
    assert sample(gateway, "sovereign_rollout_candidate_percent", model=ROUTE, candidate="cand") == 0
    served = httpx.get(fault.url + "/_stats").json()["requests"]
    with Load(gateway.url) as after:
        time.sleep(2)
    assert after.seen["local"] > 0 and httpx.get(fault.url + "/_stats").json()["requests"] == served  # all on stable
    print(f"breach to rollback: rollout started {took:.2f}s before its rollback")


def test_slow_candidate_rolls_back_on_p95(gateway: LiveServer, fault: Proc) -> None:
    arm(fault, "slow", delay_s=1.0)
    with Load(gateway.url, threads=4):
        done = start(gateway, "--steps", "50,100", "--interval", "30s", "--min-requests", "5",
                     "--max-p95", "1s", "--max-p99", "30s")
    assert done.returncode == 3, done.stdout + done.stderr
    state = status(gateway)
    assert state["state"]["status"] == "rolled_back" and "p95" in state["state"]["reason"]
    assert state["events"][-1]["detail"]["candidate"]["p95_s"] > 1.0


def test_no_traffic_never_promotes(gateway: LiveServer) -> None:
    done = start(gateway, "--steps", "10,100", "--interval", "1s", "--min-requests", "5", "--max-wait-intervals", "2")
    assert done.returncode == 4, done.stdout + done.stderr  # paused for an operator, never promoted
    state = status(gateway)
    assert (state["state"]["status"], state["state"]["percent"]) == ("paused", 10)
    assert state["state"]["reason"].startswith("inconclusive") and "promote" not in [e["kind"] for e in state["events"]]


def test_dry_run_and_operator_errors(gateway: LiveServer) -> None:
    dry = rollout(gateway, "start", "--route", ROUTE, "--candidate", "cand", "--dry-run", "--interval", "5m")
    assert dry.returncode == 0 and "dry run" in dry.stdout and "Current analysis" in dry.stdout
    assert httpx.get(gateway.url + "/admin/rollouts").json()["data"] == [] or status(gateway)["state"]["status"] \
        not in ("progressing", "paused")  # nothing moved
    assert rollout(gateway, "start", "--route", ROUTE, "--candidate", "ghost", "--force").returncode == 1
    assert rollout(gateway, "status", "--route", ROUTE, "--flag", "x").returncode == 1  # neither or both
    first = rollout(gateway, "start", "--route", ROUTE, "--candidate", "cand", "--force", "--interval", "10m")
    assert first.returncode == 0, first.stderr
    again = rollout(gateway, "start", "--route", ROUTE, "--candidate", "cand", "--force")
    assert again.returncode == 1 and "already progressing" in again.stderr
    assert rollout(gateway, "pause", "--route", ROUTE).returncode == 0
    assert status(gateway)["state"]["status"] == "paused"
    assert rollout(gateway, "abort", "--route", ROUTE).returncode == 0
    assert status(gateway)["state"]["status"] == "aborted"


def test_prometheus_analysis_rolls_back_a_failing_candidate(gateway: LiveServer, fault: Proc,
                                                            prometheus: str) -> None:
    arm(fault, "status", status=500, ratio=0.25)
    with Load(gateway.url):
        done = start(gateway, "--steps", "50,100", "--interval", "30s", "--min-requests", "8",
                     "--prometheus-url", prometheus)
    assert done.returncode == 3, done.stdout + done.stderr
    state = status(gateway)
    assert state["spec"]["prometheus_url"] == prometheus and "error_ratio" in state["state"]["reason"]
    query = 'sum(sovereign_deployment_requests_total{model="canary",deployment="cand",outcome="error"})'
    result = httpx.get(prometheus + "/api/v1/query", params={"query": query}).json()["data"]["result"]
    assert float(result[0]["value"][1]) > 0  # the figures came through Prometheus's scrape of the gateway


def test_a_flag_rollout_judges_requests_by_variant_and_stores_the_final_percent(gateway: LiveServer) -> None:
    with Load(gateway.url):
        done = rollout(gateway, "start", "--flag", "cost_optimization", "--steps", "50,100", "--interval", "3s",
                       "--min-requests", "5", "--force", "--wait", "--poll", "0.3s")
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        state = httpx.get(gateway.url + "/admin/rollouts/flag:cost_optimization").json()
        promoted = [e for e in state["events"] if e["kind"] == "promote"]
        assert promoted and promoted[0]["detail"]["candidate"]["requests"] >= 5  # requests served "on"
        assert promoted[0]["detail"]["stable"]["requests"] > 0  # and "off", in the 50 % stage
        flag = httpx.get(gateway.url + "/admin/flags/cost_optimization").json()
        assert (flag["kind"], flag["percentage"]) == ("percentage", 100)
        assert sample(gateway, "sovereign_flag_requests_total", flag="cost_optimization", variant="on",
                      outcome="ok") > 0
    finally:
        httpx.post(gateway.url + "/admin/rollouts/abort", json={"target": "flag:cost_optimization"})
        httpx.put(gateway.url + "/admin/flags/cost_optimization", json={"kind": "boolean", "percentage": 100})
