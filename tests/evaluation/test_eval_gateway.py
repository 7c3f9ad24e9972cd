"""``sovereign eval`` end to end: a live gateway (SmolLM2 on llama-server, MiniLM, the embedded
store with three ingested documents) whose route ``canary`` has the embedded engine (``local``) and
the fault engine (``cand``); runs logged to a real MLflow SQLite tracking store; a rollout whose
evaluation gate runs in the gateway's controller.

Bad input tried: a dataset line naming a model the gateway does not serve (exit 1, file:line, nothing
logged to MLflow), an unknown pinned deployment (CLI exit 1; HTTP 400 envelope), the pin header with
a user key (403), a bound that is missed (exit 3), promoting a version that does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovereign.testing.canary import ROUTE, canary_config
from sovereign.testing.fault_engine import REPLY
from tests.conftest import LiveServer, start_server
from tests.integration.test_remote_engines import Proc, arm
from tests.integration.test_remote_engines import fault as fault

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ADMIN, USER = "sk-admin-eval-test", "sk-user-eval-test"
DOCS = {
    "tides.md": "# Ocean tides\n\nTides are caused mainly by the gravitational pull of the Moon on the oceans of "
                "the Earth. The Sun adds a smaller pull, so spring tides come at new and full moon.\n",
    "sourdough.md": "# Sourdough bread\n\nA sourdough starter is a fermented mixture of flour and water that holds "
                    "wild yeast and lactic acid bacteria. Feed it daily and keep it warm.\n",
    "volcano.md": "# Volcanoes\n\nMagma that reaches the surface of the Earth is called lava. Lava cools into "
                  "igneous rock such as basalt, and ash clouds can travel thousands of kilometres.\n",
}
QUESTIONS = [
    {"question": "What causes the ocean tides?", "pages": ["tides.md"],
     "answer": "Tides are caused mainly by the gravitational pull of the Moon on the oceans."},
    {"question": "What is a sourdough starter made of?",
     "answer": "A sourdough starter is a fermented mixture of flour and water."},
    {"question": "What is magma called when it reaches the surface?", "pages": ["volcano.md"]},
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, fault: Proc) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("eval")
    (tmp / "sovereign.toml").write_text(canary_config(fault.url) + "[server]\napi_keys_env = \"EVAL_USER_KEYS\"\n"
                                        "admin_keys_env = \"EVAL_ADMIN_KEYS\"\n")
    docs = tmp / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    (tmp / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")},
            "SOVEREIGN_CONFIG": str(tmp / "sovereign.toml"), "SOVEREIGN_DATA_DIR": str(tmp / "data"),
            "EVAL_USER_KEYS": USER, "EVAL_ADMIN_KEYS": ADMIN, "TMP": str(tmp)}


def cli(env: dict[str, str], *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--url", url] if url else []
    return subprocess.run([sys.executable, "-m", "sovereign", *args, *extra], env=env, capture_output=True,
                          text=True, timeout=600, cwd=env["TMP"])


@pytest.fixture(scope="module")
def gateway(env: dict[str, str]) -> Iterator[LiveServer]:
    ingested = cli(env, "ingest", str(Path(env["TMP"]) / "docs"), "--tenant", "key-1")  # the admin key's tenant
    assert ingested.returncode == 0, ingested.stderr
    server_env = {k: v for k, v in env.items() if k.startswith(("SOVEREIGN_", "EVAL_"))}
    server = start_server(Path(env["SOVEREIGN_DATA_DIR"]), server_env)
    yield server
    server.stop()


def mlflow_client(env: dict[str, str]) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{Path(env['SOVEREIGN_DATA_DIR']) / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(env: dict[str, str], experiment: str = "sovereign-eval") -> list[Any]:
    client = mlflow_client(env)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else list(client.search_runs([found.experiment_id]))


def test_rag_run_is_scored_charted_logged_registered_and_promoted(env: dict[str, str], gateway: LiveServer) -> None:
    done = cli(env, "eval", "run", "questions.jsonl", "--model", "sovereign-rag", "--max-tokens", "40",
               "--out", "out-rag", "--register", url=gateway.url)
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads((Path(env["TMP"]) / "out-rag" / "eval.json").read_text())
    metrics, cases = result["metrics"], result["cases"]
    assert metrics["cases"] == 3 and metrics["hit_at_1"] == 1.0 and metrics["mrr"] == 1.0  # distinct topics
    assert 0.0 <= metrics["grounded_rate"] <= 1.0 and metrics["prompt_tokens_mean"] > 0
    assert [("token_f1" in c) for c in cases] == [True, True, False]  # only cases with reference answers
    assert all(c["finish_reason"] in ("stop", "length") and isinstance(c["grounded"], bool) for c in cases)
    assert [c["first_hit"].rsplit("/", 1)[-1] for c in cases] == ["tides.md", "sourdough.md", "volcano.md"]
    assert result["corpus"]["documents"] == 3 and len(result["dataset"]["sha256"]) == 64
    assert (Path(env["TMP"]) / "out-rag" / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hit_at_1" in done.stdout and "MLflow run" in done.stdout

    (logged,) = runs(env)
    assert logged.data.params["model"] == "sovereign-rag"
    assert logged.data.params["dataset_sha256"] == result["dataset"]["sha256"]
    assert logged.data.params["corpus_sha256"] == result["corpus"]["sha256"]
    assert logged.data.metrics["hit_at_1"] == 1.0 and logged.info.status == "FINISHED"
    client = mlflow_client(env)
    artefacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"eval.json", "eval.png", "dataset"} <= artefacts
    assert str(client.get_model_version_by_alias("sovereign.sovereign-rag", "candidate").version) == "1"

    promoted = cli(env, "eval", "promote", "sovereign-rag", "1", "--reason", "eval passed")
    assert promoted.returncode == 0, promoted.stderr
    assert str(client.get_model_version_by_alias("sovereign.sovereign-rag", "champion").version) == "1"
    (move,) = runs(env, "sovereign-eval-promotions")
    assert move.data.params["alias"] == "champion" and move.data.params["reason"] == "eval passed"
    missing = cli(env, "eval", "promote", "sovereign-rag", "9")
    assert missing.returncode == 1 and "no version 9" in missing.stderr


def test_a_model_the_gateway_does_not_serve_fails_before_anything_is_logged(
        env: dict[str, str], gateway: LiveServer) -> None:
    bad = Path(env["TMP"]) / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n" + json.dumps({**QUESTIONS[1], "model": "no-such-model"}) + "\n")
    before = len(runs(env))
    done = cli(env, "eval", "run", str(bad), "--model", "sovereign-rag", "--mlflow", "--out", "out-bad",
               url=gateway.url)
    assert done.returncode == 1 and f"{bad}:2: model 'no-such-model' is not served" in done.stderr.replace("\n", "")
    assert len(runs(env)) == before and not (Path(env["TMP"]) / "out-bad").exists()


def test_a_pinned_deployment_is_evaluated_and_compared(env: dict[str, str], gateway: LiveServer) -> None:
    runs_made = {}
    for deployment in ("cand", "local"):
        done = cli(env, "eval", "run", "questions.jsonl", "--model", ROUTE, "--deployment", deployment,
                   "--max-tokens", "8", "--no-chart", "--out", f"out-{deployment}", url=gateway.url)
        assert done.returncode == 0, done.stderr
        runs_made[deployment] = json.loads((Path(env["TMP"]) / f"out-{deployment}" / "eval.json").read_text())
    assert all(c["answer"] == REPLY for c in runs_made["cand"]["cases"])  # the fault engine answered every one
    assert not any(c["answer"] == REPLY for c in runs_made["local"]["cases"])  # SmolLM2 did
    assert runs_made["cand"]["params"]["deployment"] == "cand"
    compared = cli(env, "eval", "compare", "out-local/eval.json", "out-cand/eval.json", "--chart", "cmp.png")
    assert compared.returncode == 0 and f"{ROUTE}@cand" in compared.stdout
    assert (Path(env["TMP"]) / "cmp.png").stat().st_size > 1000

    unknown = cli(env, "eval", "run", "questions.jsonl", "--model", ROUTE, "--deployment", "nope", url=gateway.url)
    assert unknown.returncode == 1 and "no deployment 'nope'" in unknown.stderr
    body = {"model": ROUTE, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    as_user = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=60,
                         headers={"Authorization": f"Bearer {USER}", "X-Sovereign-Deployment": "cand"})
    assert as_user.status_code == 403 and as_user.json()["error"]["param"] == "X-Sovereign-Deployment"
    as_admin = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {ADMIN}", "X-Sovereign-Deployment": "nope"})
    assert as_admin.status_code == 400 and as_admin.json()["error"]["type"] == "invalid_request_error"


def test_a_missed_bound_exits_3(env: dict[str, str], gateway: LiveServer) -> None:
    done = cli(env, "eval", "run", "questions.jsonl", "--model", "sovereign-rag", "--no-answers", "--no-chart",
               "--min", "hit_at_1=0.5", "--max", "search_p50_ms=0.001", "--out", "out-bound", url=gateway.url)
    assert done.returncode == 3 and "search_p50_ms" in done.stdout and "hit_at_1" not in done.stdout.split("missed")[-1]


def rollout(gateway: LiveServer, gate: dict[str, Any], status: tuple[str, ...]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    spec = {"route": ROUTE, "candidate": "cand", "steps": [50, 100], "interval_s": 600, "min_requests": 1, "gate": gate}
    started = httpx.post(gateway.url + "/admin/rollouts", json=spec, headers=headers, timeout=30)
    assert started.status_code == 200, started.text
    assert started.json()["state"]["percent"] == 0  # nothing moves before the gate
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = httpx.get(gateway.url + f"/admin/rollouts/route:{ROUTE}", headers=headers, timeout=30).json()["state"]
        if state["gate"].get("status") in status:
            httpx.post(gateway.url + "/admin/rollouts/abort", json={"target": f"route:{ROUTE}"}, headers=headers)
            return state
        time.sleep(0.5)
    raise AssertionError(f"the gate did not finish: {state}")


def test_the_controller_gates_a_rollout_on_an_evaluation(env: dict[str, str], gateway: LiveServer,
                                                          fault: Proc) -> None:
    dataset = str(Path(env["TMP"]) / "questions.jsonl")
    retrieval_only = {"dataset": dataset, "minimum": {"hit_at_5": 1.0}, "answers": False}
    passed = rollout(gateway, retrieval_only, ("passed", "failed"))
    assert passed["gate"]["status"] == "passed" and passed["percent"] == 50 and passed["status"] == "progressing"
    assert passed["gate"]["metrics"]["hit_at_5"] == 1.0
    arm(fault, "status", status=500)  # the candidate fails every answer: the evaluation cannot pass
    try:
        failed = rollout(gateway, {"dataset": dataset, "minimum": {"hit_at_5": 0.5}, "answers": True}, ("failed",))
    finally:
        httpx.post(fault.url + "/_reset").raise_for_status()
    assert failed["status"] == "aborted" and failed["percent"] == 0
    assert "evaluation gate failed: the evaluation could not run" in failed["reason"]
