"""Several gateway processes agree on a rollout's split, and a restarted gateway resumes it.

``sovereign serve --workers 2`` over one ``data_dir/control.sqlite3``: every worker re-reads the
rollout within ``flags.sync_s`` and buckets users with the same MurmurHash3, so whichever worker
takes a connection, a user lands on the same deployment. Then the whole gateway is stopped and
started again on the same data directory: the rollout is still at its step and percent and the
same users land on the same side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sovereign.testing.canary import ROUTE, canary_config
from tests.conftest import LiveServer, start_server
from tests.integration.test_remote_engines import Proc
from tests.integration.test_remote_engines import fault as fault

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USERS = [f"person-{i}" for i in range(30)]


def serve(data: Path, config: Path) -> LiveServer:
    server = start_server(data, {"SOVEREIGN_CONFIG": str(config)}, ["--workers", "2"])
    deadline = time.monotonic() + 120  # /readyz answered by one worker: wait until fresh connections all are
    while not all(httpx.get(server.url + "/readyz").status_code == 200 for _ in range(8)):
        assert time.monotonic() < deadline, "not every worker became ready"
        time.sleep(0.5)
    return server


def sides(url: str) -> dict[str, set[str]]:
    """The deployment each user was served by, over 3 requests each on fresh connections."""
    seen: dict[str, set[str]] = {u: set() for u in USERS}
    for _ in range(3):
        for user in USERS:
            body = {"model": ROUTE, "user": user, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
            response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)  # a new connection each time
            assert response.status_code == 200, response.text
            seen[user].add(response.json()["sovereign"]["route"]["deployment"])
    return seen


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory, fault: Proc) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("workers-rollout")
    (tmp / "sovereign.toml").write_text(canary_config(fault.url))
    yield tmp / "data", tmp / "sovereign.toml"


def test_workers_agree_on_the_split_and_a_restart_resumes(paths: tuple[Path, Path]) -> None:
    data, config = paths
    server = serve(data, config)
    try:
        spec = {"route": ROUTE, "candidate": "cand", "steps": [50, 100], "interval_s": 600, "min_requests": 1000}
        assert httpx.post(server.url + "/admin/rollouts", json=spec).status_code == 200
        time.sleep(1.0)  # flags.sync_s = 0.2 in every worker
        before = sides(server.url)
    finally:
        server.stop()
    assert all(len(s) == 1 for s in before.values()), before  # sticky across both workers
    on_candidate = sum(s == {"cand"} for s in before.values())
    assert 0 < on_candidate < len(USERS)

    server = serve(data, config)  # the same data directory: a restarted gateway
    try:
        state = httpx.get(f"{server.url}/admin/rollouts/route:{ROUTE}").json()["state"]
        assert (state["status"], state["step"], state["percent"]) == ("progressing", 0, 50)
        assert sides(server.url) == before
    finally:
        server.stop()


def test_two_gateways_on_one_postgresql_agree(tmp_path: Path, pg_uri: str, fault: Proc) -> None:
    """Two "hosts" (separate data directories, one process each) share flags and rollouts through
    PostgreSQL (``flags.store_dsn_env``): a rollout started on one splits users alike on both."""
    config = tmp_path / "sovereign.toml"
    config.write_text(canary_config(fault.url))
    env = {"SOVEREIGN_CONFIG": str(config), "SOVEREIGN_FLAGS__STORE_DSN_ENV": "CONTROL_DSN", "CONTROL_DSN": pg_uri}
    one = start_server(tmp_path / "one", env)
    two = start_server(tmp_path / "two", env)
    try:
        target = f"route:{ROUTE}"
        httpx.post(one.url + "/admin/rollouts/abort", json={"target": target})  # a rollout left by another test
        spec = {"route": ROUTE, "candidate": "cand", "steps": [50, 100], "interval_s": 600, "min_requests": 1000}
        assert httpx.post(one.url + "/admin/rollouts", json=spec).status_code == 200
        time.sleep(1.0)
        assert httpx.get(f"{two.url}/admin/rollouts/{target}").json()["state"]["percent"] == 50
        assert sides(one.url) == sides(two.url)
        assert httpx.post(two.url + "/admin/flags/semantic_cache", json={}).status_code in (404, 405)
        assert httpx.put(two.url + "/admin/flags/semantic_cache", json={"enabled": False}).status_code == 200
        time.sleep(1.0)
        assert httpx.get(one.url + "/admin/flags/semantic_cache").json()["enabled"] is False
    finally:
        httpx.post(one.url + "/admin/rollouts/abort", json={"target": f"route:{ROUTE}"})
        one.stop()
        two.stop()
