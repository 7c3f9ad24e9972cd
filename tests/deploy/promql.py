"""Helpers for the deploy tests: load rules and dashboards, pull metric names out of PromQL."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))

_FUNCTIONS_AND_KEYWORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg", "count",
    "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "offset", "absent", "predict_linear",
    "label_values", "label_replace", "bool", "topk", "bottomk", "clamp_min", "clamp_max", "le", "time", "vector", "abs",
}


def rules() -> list[dict[str, Any]]:
    """Every rule (alerting and recording) of every rules file."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def dashboard_exprs() -> list[tuple[str, str]]:
    """``(dashboard file name, expr)`` for every panel target and templating query."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out.extend((path.name, t["expr"]) for t in panel["targets"])
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                out.append((path.name, variable["query"]["query"]))
    return out


def metric_names(expr: str) -> set[str]:
    """Series names referenced by a PromQL expression (label matchers, strings and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", text)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return {n for n in names if n not in _FUNCTIONS_AND_KEYWORDS and not re.fullmatch(r"\d+[smhdwy]?", n)}


def exposition_base(name: str) -> str:
    """The family a sample name belongs to (``x_bucket`` -> ``x``; ``x_total`` stays)."""
    return re.sub(r"_(bucket|count|sum|created)$", "", name)
