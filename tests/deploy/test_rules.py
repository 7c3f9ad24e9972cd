"""Prometheus config and alert rules: promtool checks, rule unit tests, required fields, runbook links."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.promql import DEPLOY, RULE_FILES, alerts

PROMTOOL = shutil.which("promtool")
# Skipped only outside CI: in CI (CI=true) a missing promtool fails the tests instead.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="promtool missing: scripts/setup.sh --dev installs it"
)
RUNBOOK = (ROOT / "docs" / "operations.md").read_text()


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool missing: scripts/setup.sh --dev installs it (Debian prometheus)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_promtool
def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(DEPLOY / "prometheus" / "tests" / "sovereign.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@needs_promtool
def test_promtool_check_prometheus_config() -> None:
    result = _promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_for_severity_runbook_and_a_unit_test() -> None:
    unit_tests = (DEPLOY / "prometheus" / "tests" / "sovereign.test.yml").read_text()
    headings = {h.strip().lower() for h in re.findall(r"^### (\w+)\s*$", RUNBOOK, flags=re.M)}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in headings, f"docs/operations.md has no section for {name}"
    cases = [c for t in yaml.safe_load(unit_tests)["tests"] for c in t.get("alert_rule_test", [])]
    for name in names:  # in the promtool unit tests: a case where it fires and one where it stays quiet
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in cases), f"{name}: no firing case"
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in cases), f"{name}: no quiet case"


def test_issue_alert_families_are_covered() -> None:
    """Availability, error ratio, p95/p99 latency and TTFT burn, cache, engine, breaker, queue, GPU, disk."""
    names = {a["alert"] for a in alerts()}
    assert {
        "SovereignDown", "SovereignErrorBudgetBurnFast", "SovereignErrorBudgetBurnSlow",
        "SovereignLatencyP95BudgetBurn", "SovereignLatencyP99BudgetBurn", "SovereignTTFTP95BudgetBurn",
        "SovereignTTFTP99BudgetBurn", "SovereignCacheHitRatioCollapse", "SovereignEngineDown",
        "SovereignBreakerOpen", "SovereignQueueSaturation", "SovereignGPUMemoryHigh", "SovereignDiskSpaceLow",
    } <= names
