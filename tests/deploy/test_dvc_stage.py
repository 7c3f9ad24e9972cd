"""deploy/dvc: the evaluation stage run by the real ``dvc`` (PyPI) on a local remote, against a live
gateway: the question set is versioned by ``dvc add``, ``dvc repro`` runs ``sovereign eval`` and logs
to MLflow with the DVC md5, an unchanged repro is skipped, a changed question set re-runs.

Bad input tried: a stage whose dataset names a model the gateway does not serve (``dvc repro``
fails, no metrics written).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STAGE = Path(__file__).resolve().parents[2] / "deploy" / "dvc"
QUESTIONS = [{"question": "How do I say hello?", "answer": "Say hello to everyone in the room politely."},
             {"question": "What is a list?", "pages": ["list.html"]}]


def dvc(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)


def test_dvc_repro_runs_the_evaluation_and_versions_the_questions(tmp_path: Path, live_server: LiveServer) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(STAGE, repo)
    dataset = repo / "data" / "questions.jsonl"
    dataset.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["eval"].update(model="smollm2-135m-instruct", max_tokens=8, url=live_server.url)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache"), "SOVEREIGN_DATA_DIR": str(tmp_path / "data")}
    for step in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "local", str(tmp_path / "remote")],
                 ["add", "-q", "data/questions.jsonl"]):
        done = dvc(repo, env, *step)
        assert done.returncode == 0, done.stderr
    md5 = yaml.safe_load((repo / "data" / "questions.jsonl.dvc").read_text())["outs"][0]["md5"]

    done = dvc(repo, env, "repro")
    assert done.returncode == 0, done.stderr + done.stdout
    metrics = json.loads((repo / "results" / "metrics.json").read_text())
    assert metrics["cases"] == 2 and metrics["prompt_tokens_mean"] > 0
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["evaluate"]
    assert {d["path"]: d["md5"] for d in lock["deps"]}["data/questions.jsonl"] == md5
    shown = json.loads(dvc(repo, env, "metrics", "show", "--json").stdout)
    assert shown[""]["data"]["results/metrics.json"]["data"]["cases"] == 2
    pushed = dvc(repo, env, "push")
    assert pushed.returncode == 0 and any((tmp_path / "remote").rglob("*")), pushed.stderr

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'data' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sovereign-eval").experiment_id])
    assert run.data.params["dataset_dvc_md5"] == md5  # MLflow links back to the DVC version of the data

    stamp = (repo / "results" / "metrics.json").stat().st_mtime_ns
    again = dvc(repo, env, "repro")
    assert again.returncode == 0 and (repo / "results" / "metrics.json").stat().st_mtime_ns == stamp  # skipped

    dataset.write_text(dataset.read_text() + json.dumps({"question": "Why?", "model": "no-such-model"}) + "\n")
    assert "modified" in dvc(repo, env, "status").stdout
    failed = dvc(repo, env, "repro")
    assert failed.returncode != 0 and "model 'no-such-model' is not served" in failed.stderr + failed.stdout
    kept = repo / "results" / "metrics.json"
    assert not kept.exists() or json.loads(kept.read_text()) == metrics  # no half-written result
