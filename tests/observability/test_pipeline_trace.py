"""A whole pipeline hop by hop: one ``sovereign-agent`` request is one trace (server, cache, agent
nodes, retrieval, engine), and ``/metrics`` then has values for every family the hops feed.

A real ``sovereign serve`` with tracing on (OTLP/HTTP to :class:`OtlpSink`), one uploaded page of
the Python docs, the real SmolLM2 and MiniLM.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer, start_server
from tests.observability.otlp_sink import OtlpSink

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = Path(__file__).resolve().parent.parent / "fixtures" / "docs" / "library" / "bisect.html"
TRACE = "0af7651916cd43dd8448eb211c80319c"
QUESTION = "What does bisect.insort do to a sorted list?"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, OtlpSink]]:
    with OtlpSink() as sink:
        server = start_server(tmp_path_factory.mktemp("traced"), {
            "SOVEREIGN_OBSERVABILITY__OTLP_ENDPOINT": sink.endpoint,
            "SOVEREIGN_ENGINE__N_CTX": "2048",
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # the SDK's own knob: export every 0.2 s
        })
        try:
            upload = {"filename": "bisect.html", "content_base64": base64.b64encode(PAGE.read_bytes()).decode()}
            response = httpx.post(server.url + "/v1/documents", json={"files": [upload]}, timeout=120)
            assert response.status_code == 200 and response.json()["added"] == 1, response.text
            yield server, sink
        finally:
            server.stop()


def _ask(server: LiveServer, trace_id: str) -> httpx.Response:
    body = {"model": "sovereign-agent", "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24, "temperature": 0}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300,
                      headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})


def test_one_agent_request_is_one_connected_trace(traced: tuple[LiveServer, OtlpSink]) -> None:
    server, sink = traced
    response = _ask(server, TRACE)
    assert response.status_code == 200, response.text
    assert response.headers["x-sovereign-cache"] == "miss"
    wanted = {"POST /v1/chat/completions", "cache.lookup", "cache.store", "agent.run", "agent.node.router",
              "agent.node.retrieval", "agent.node.synthesizer", "rag.search", "chat smollm2-135m-instruct"}

    def complete(spans: list[dict]) -> bool:
        return wanted <= {s["name"] for s in spans if s["trace_id"] == TRACE}

    mine = [s for s in sink.wait_for(complete, timeout=30) if s["trace_id"] == TRACE]
    names = {s["name"] for s in mine}
    assert wanted <= names, wanted - names
    by_id = {s["span_id"]: s for s in mine}
    (root,) = [s for s in mine if s["name"] == "POST /v1/chat/completions"]
    assert root["parent_span_id"] == "b7ad6b7169203331"  # the client's traceparent
    for span in mine:  # every hop hangs under the request span: one tree, no orphan
        hop = span
        while hop is not root:
            assert hop["parent_span_id"] in by_id, (span["name"], "orphan")
            hop = by_id[hop["parent_span_id"]]
    engine = next(s for s in mine if s["name"] == "chat smollm2-135m-instruct")
    assert engine["attributes"]["gen_ai.usage.output_tokens"] >= 1
    assert QUESTION not in str([s["attributes"] for s in mine])  # no prompt text by default


def _samples(server: LiveServer) -> dict[str, float]:
    """Sample name -> value summed over label sets."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
            totals[key] = totals.get(key, 0.0) + sample.value
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def test_every_hop_feeds_its_metrics(traced: tuple[LiveServer, OtlpSink]) -> None:
    server, _sink = traced
    _ask(server, "1" * 32)  # ensure one miss stored, whichever test ran first
    again = _ask(server, "2" * 32)
    assert again.headers["x-sovereign-cache"] == "hit-exact"
    values = _samples(server)
    assert values["sovereign_ingest_files_total|outcome=added"] == 1
    assert values["sovereign_ingest_chunks_total|store=embedded"] >= 1
    assert values["sovereign_cache_lookups_total|layer=exact|result=hit"] >= 1
    assert values["sovereign_cache_lookups_total|layer=semantic|result=miss"] >= 1
    assert values["sovereign_cache_lookup_duration_seconds_count|backend=sqlite"] >= 2
    assert values["sovereign_cache_entries|backend=sqlite"] >= 1
    assert values["sovereign_retrieval_duration_seconds_count|store=embedded"] >= 1
    assert values["sovereign_embedding_duration_seconds_count"] >= 2  # ingest batch + query
    for node in ("router", "retrieval", "synthesizer"):
        assert values[f"sovereign_agent_node_duration_seconds_count|node={node}"] >= 1, node
    assert 0 < values["sovereign_agent_node_duration_seconds_sum|node=synthesizer"] < 300
    assert values.get("sovereign_cache_errors_total", 0) == 0
