"""Drift on a live gateway: record real chat traffic, capture a baseline with the CLI, shift the
traffic, see ``GET /admin/drift``, ``/metrics`` and ``sovereign drift report --chart`` report it.

One ``sovereign serve`` (embedded SmolLM2, response cache off so every request reaches the
engine and its TokenClock) with drift on: a 20-second window, 0.2-second flushes and checks, 10
samples a side. Baseline traffic: short prompts; shifted traffic: prompts about ten times longer
(the ``prompt_tokens`` signal). Bad input tried: ``POST /admin/drift/baseline`` with a negative
``since`` (400, OpenAI envelope), ``drift baseline --since -5`` and a CLI pointed at no gateway
(exit 1, one-line message).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer, free_port, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "smollm2-135m-instruct"
WINDOW_S = 20.0  # long enough that the 15 shifted requests all fit in it on a busy machine
SHORT = ["Hi there.", "Name a color.", "Say yes.", "Pick a number.", "One word please."]
LONG = ("Here is a long note about gardening, watering schedules, soil acidity, compost, mulch, seeds, "
        "sunlight and pruning. ") * 6


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("drift") / "data", {
        "SOVEREIGN_DRIFT__ENABLED": "true", "SOVEREIGN_DRIFT__WINDOW_S": str(WINDOW_S),
        "SOVEREIGN_DRIFT__FLUSH_S": "0.2", "SOVEREIGN_DRIFT__CHECK_S": "0.2", "SOVEREIGN_DRIFT__MIN_SAMPLES": "10",
        "SOVEREIGN_DRIFT__AUTO_BASELINE": "false", "SOVEREIGN_CACHE__ENABLED": "false",
        "SOVEREIGN_ENGINE__N_CTX": "1024", "SOVEREIGN_ENGINE__N_PARALLEL": "4"})
    yield server
    server.stop()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sovereign", "drift", *args, "--url", url],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


def chat(http: httpx.Client, content: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 1, "temperature": 0}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


def test_a_baseline_then_shifted_traffic_is_reported_as_drift(gateway: LiveServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        bad = http.post("/admin/drift/baseline", json={"since": -1})  # bad input: a negative window
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "since" and error["message"]

        for i in range(15):
            chat(http, SHORT[i % len(SHORT)])
        last = time.monotonic()
        captured = cli(gateway.url, "baseline", "--since", "60")
        assert captured.returncode == 0, captured.stderr
        assert "baseline #1 captured" in captured.stdout and "prompt_tokens=15" in captured.stdout

        time.sleep(max(0.0, WINDOW_S + 0.5 - (time.monotonic() - last)))  # the baseline traffic leaves the window
        calm = http.get("/admin/drift").json()
        assert calm["baseline"]["id"] == 1 and calm["drifted"] == []

        for _ in range(15):
            chat(http, LONG)
        report = http.get("/admin/drift").json()
        signals = {s["signal"]: s for s in report["signals"]}
        assert signals["prompt_tokens"]["window_n"] == 15, signals["prompt_tokens"]
        assert "prompt_tokens" in report["drifted"], signals["prompt_tokens"]
        assert signals["model"]["status"] == "ok" and signals["model"]["chart"]["labels"] == [MODEL]

        families = {f.name: f.samples for f in text_string_to_metric_families(http.get("/metrics").text)}
        detected = {s.labels["signal"]: s.value for s in families["sovereign_drift_detected"]}
        assert detected["prompt_tokens"] == 1 and detected["model"] == 0
        scores = {(s.labels["signal"], s.labels["test"]): s.value for s in families["sovereign_drift_score"]}
        assert scores[("prompt_tokens", "ks")] >= 0.1
        samples = {s.labels["signal"]: s.value for s in families["sovereign_drift_window_samples"]}
        assert samples["prompt_tokens"] == 15

    chart = tmp_path / "drift.png"
    shown = cli(gateway.url, "report", "--chart", str(chart))
    assert shown.returncode == 0, shown.stderr
    assert "prompt_tokens" in shown.stdout and "drifted: prompt_tokens" in shown.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000

    negative = cli(gateway.url, "baseline", "--since", "-5")  # bad input: not a duration
    assert negative.returncode == 1 and "is not a duration" in negative.stderr
    nobody = cli(f"http://127.0.0.1:{free_port()}", "report")  # bad input: no gateway there
    assert nobody.returncode == 1 and "No gateway answers" in nobody.stderr
