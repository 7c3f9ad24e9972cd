"""Grafana dashboards: structure (what Grafana needs to import them) and valid PromQL in every query."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import DASHBOARDS, dashboard_exprs
from tests.deploy.test_rules import needs_promtool


def test_the_four_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {"overview", "inference", "retrieval-cache", "agents"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"].startswith("sovereign-") and len(board["uid"]) <= 40
    assert board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["panels"]
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in {"timeseries", "stat", "gauge", "table"}
        assert panel["title"] and panel["targets"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for x in range(grid["x"], grid["x"] + grid["w"]):  # panels must not overlap
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["expr"].strip()
            assert "$" not in target["expr"].replace("$__rate_interval", "").replace("$instance", "").replace(
                "$model", ""), target["expr"]  # only known variables


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query, variables substituted, as a recording rule that ``promtool check rules`` parses."""
    rules = []
    for i, (_board, expr) in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$model", ".*")
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
