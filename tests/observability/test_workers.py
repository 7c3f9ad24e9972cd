"""Two uvicorn workers with tracing on: multiprocess metrics, one trace per request, JSON logs.

One process group serves all three checks (start-up is the slow part on a 2-core machine):
``sovereign serve --workers 2`` (which points ``PROMETHEUS_MULTIPROC_DIR`` at
``data_dir/prometheus-multiproc`` and empties it: a stale file from an earlier run is planted
there first), the OTLP/HTTP exporter pointed at :class:`OtlpSink`, and stderr captured to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port, wait_every_worker, wait_ready
from tests.observability.otlp_sink import OtlpSink

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m-instruct"
SECRET = "zebra-violet-prompt-canary"


class Cluster:
    def __init__(self, url: str, sink: OtlpSink, log: Path, prom_dir: Path) -> None:
        self.url, self.sink, self.log, self.prom_dir = url, sink, log, prom_dir


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("workers")
    prom = tmp / "data" / "prometheus-multiproc"
    prom.mkdir(parents=True)
    (prom / "counter_999999.db").write_bytes(b"stale, unreadable: must be wiped at start")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    with OtlpSink() as sink:
        env.update({
            "SOVEREIGN_DATA_DIR": str(tmp / "data"),
            "SOVEREIGN_ENGINE__N_CTX": "1024",
            "SOVEREIGN_ENGINE__N_THREADS": "1",
            "SOVEREIGN_OBSERVABILITY__OTLP_ENDPOINT": sink.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # the SDK's own knob: export every 0.2 s
        })
        log = tmp / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sovereign", "serve", "--workers", "2", "--port", str(port),
                 "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url + "/readyz", proc, log, timeout=150)
            wait_every_worker(url, timeout=150)
            yield Cluster(url, sink, log, prom)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_counters_add_up_across_workers(cluster: Cluster) -> None:
    """Every request is counted once whichever worker served it and whichever serves /metrics."""
    ids = set()
    n = 12
    for _ in range(n):
        with httpx.Client() as client:  # a new connection each time: the kernel spreads them
            response = client.get(cluster.url + "/v1/models")
            assert response.status_code == 200
        ids.add(response.headers.get("x-request-id"))
    key = ("sovereign_requests_total", (("model", ""), ("route", "/v1/models"), ("status", "200")))
    for _ in range(4):  # whichever worker answers the scrape, the total is the same
        samples = _samples(httpx.get(cluster.url + "/metrics").text)
        assert samples[key] == n
        assert samples[("sovereign_requests_in_flight", ())] <= 1  # livesum: only the scrape itself
        assert samples[("sovereign_engine_up", (("engine", MODEL),))] == 1
        assert samples[("sovereign_engine_queue_capacity", (("engine", MODEL),))] == 2 * 64  # per worker
        assert samples[("sovereign_data_volume_free_bytes", ())] > 0
    assert len(ids) == n  # a distinct generated request id each
    pids = {p.stem.rsplit("_", 1)[1] for p in cluster.prom_dir.glob("counter_*.db")}
    assert len(pids) >= 2 and "999999" not in pids  # both workers wrote samples; the stale file is gone


def test_one_request_is_one_trace_without_prompt_text(cluster: Cluster) -> None:
    """The OTLP receiver gets the server span and the engine span of one request as one trace."""
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Say {SECRET}"}], "max_tokens": 4}
    response = httpx.post(cluster.url + "/v1/chat/completions", json=body, timeout=60, headers={
        "x-request-id": "trace-test-1", "traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-test-1"

    def complete(spans: list[dict]) -> bool:
        mine = [s for s in spans if s["trace_id"] == parent_trace]
        return {s["name"] for s in mine} >= {"POST /v1/chat/completions", f"chat {MODEL}"}

    spans = [s for s in cluster.sink.wait_for(complete) if s["trace_id"] == parent_trace]
    by_name = {s["name"]: s for s in spans}
    server, engine = by_name["POST /v1/chat/completions"], by_name[f"chat {MODEL}"]
    assert server["parent_span_id"] == "00f067aa0ba902b7"  # the client's traceparent was honoured
    assert server["kind"] == 2  # SPAN_KIND_SERVER
    assert server["attributes"]["sovereign.request_id"] == "trace-test-1"
    assert server["attributes"]["http.route"] == "/v1/chat/completions"
    assert server["attributes"]["http.response.status_code"] == 200
    assert engine["parent_span_id"] == server["span_id"]
    attrs = engine["attributes"]
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] > 5
    assert 1 <= attrs["gen_ai.usage.output_tokens"] <= 4
    assert attrs["gen_ai.response.finish_reasons"][0] in {"stop", "length"}
    assert server["resource"]["service.name"] == "sovereign"
    assert all(ct == "application/x-protobuf" for ct in cluster.sink.content_types)
    assert not any(SECRET.encode() in raw for raw in cluster.sink.raw)  # capture_content is off


def test_json_access_log_has_request_id_latency_and_tokens(cluster: Cluster) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Hi {SECRET}"}], "max_tokens": 3,
            "stream": True}
    with httpx.stream("POST", cluster.url + "/v1/chat/completions", json=body, timeout=60,
                      headers={"x-request-id": "log-test-7"}) as response:
        assert response.headers["x-request-id"] == "log-test-7"
        list(response.iter_lines())
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        for line in cluster.log.read_text().splitlines():
            if '"log-test-7"' in line and '"sovereign.access"' in line:
                record = json.loads(line)
        time.sleep(0.1)
    assert record is not None, cluster.log.read_text()[-2000:]
    assert record["level"] == "INFO" and record["msg"] == "request"
    assert record["status"] == 200 and record["route"] == "/v1/chat/completions"
    assert record["duration_ms"] > 0 and record["ttft_ms"] > 0
    assert record["prompt_tokens"] > 5 and 1 <= record["completion_tokens"] <= 3
    assert len(record["trace_id"]) == 32
    assert SECRET not in cluster.log.read_text()
    for line in cluster.log.read_text().splitlines():  # one format: every line is a JSON object
        assert line.startswith("{"), line
        json.loads(line)
