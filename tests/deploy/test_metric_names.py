"""Every metric name in the alert rules and dashboards is one the app really exports.

Checked against a live ``sovereign serve`` (the session's ``live_server``) after a short load. In
single-process mode prometheus-client lists every registered family in ``# HELP`` / ``# TYPE`` lines,
even a labelled family whose first event (cache hit, retrieval, agent node, fallback) has not
happened yet, so families are matched against the live exposition; the families the load below
exercises must also have samples.
"""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer
from tests.deploy.promql import alerts, dashboard_exprs, exposition_base, metric_names, recorded_names, rules

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
PROMETHEUS_OWN = {"up"}  # synthesised by Prometheus for every target


@pytest.fixture(scope="module")
def exposition(live_server: LiveServer) -> str:
    url = live_server.url
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert httpx.post(url + "/v1/chat/completions", json=chat, timeout=60).status_code == 200
    with httpx.stream("POST", url + "/v1/chat/completions", json={**chat, "stream": True}, timeout=60) as r:
        list(r.iter_lines())
    assert httpx.post(url + "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "x"}).status_code == 200
    httpx.get(url + "/v1/nothing")
    return httpx.get(url + "/metrics").text


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_rules_and_dashboards_use_only_exported_metrics(exposition: str) -> None:
    families = _families(exposition)
    sample_names = {s.name for samples in families.values() for s in samples}
    known = set(families) | sample_names | recorded_names() | PROMETHEUS_OWN
    referenced = {("rule", n) for r in rules() for n in metric_names(r["expr"])}
    referenced |= {(board, n) for board, expr in dashboard_exprs() for n in metric_names(expr)}
    unknown = sorted((where, n) for where, n in referenced
                     if n not in known and exposition_base(n) not in known
                     and re.sub(r"_total$", "", n) not in known)
    assert not unknown, f"names not exported by /metrics: {unknown}"
    assert len({n for _, n in referenced}) > 20  # the extractor really found names


def test_histogram_bounds_used_by_rules_exist(exposition: str) -> None:
    bounds = {s.labels["le"] for samples in _families(exposition).values() for s in samples if "le" in s.labels}
    used = {le for r in rules() for le in re.findall(r'le="([^"]+)"', r["expr"])}
    assert used and used <= bounds, used - bounds


def test_families_have_sensible_values_after_load(exposition: str) -> None:
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for samples in _families(exposition).values() for s in samples}

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in values.items() if n == name and set(labels.items()) <= set(ls))

    assert total("sovereign_requests_total", route="/v1/chat/completions", status="200") >= 2
    assert total("sovereign_requests_total", route="other", status="404") >= 1
    assert total("sovereign_request_duration_seconds_count", route="/v1/embeddings") >= 1
    assert total("sovereign_time_to_first_token_seconds_count", model=MODEL) >= 2
    assert 0 < total("sovereign_time_to_first_token_seconds_sum", model=MODEL) < 120
    assert total("sovereign_inter_token_latency_seconds_count", model=MODEL) >= 1
    assert total("sovereign_prompt_tokens_total", model=MODEL) > 10
    assert total("sovereign_completion_tokens_total", model=MODEL) >= 2
    assert total("sovereign_output_tokens_per_second_count", model=MODEL) >= 1
    assert total("sovereign_engine_up", engine=MODEL) == 1
    assert total("sovereign_engine_queue_depth", engine=MODEL) == 0
    assert total("sovereign_engine_inflight_requests", engine=MODEL) == 0
    assert total("sovereign_engine_queue_capacity", engine=MODEL) >= 1
    assert total("sovereign_requests_in_flight") == 1  # the scrape itself
    assert total("sovereign_data_volume_size_bytes") >= total("sovereign_data_volume_free_bytes") > 0
    assert total("sovereign_build_info") == 1


def test_every_alert_expression_references_something(exposition: str) -> None:
    for alert in alerts():
        assert metric_names(alert["expr"]), alert["alert"]
