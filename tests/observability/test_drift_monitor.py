"""The drift recorder, the SQLite flush and the check loop, end to end in one process.

Real ``drift.sqlite`` files; the recorder's observations are given explicit timestamps so that a
baseline hour and a later window can be replayed in milliseconds. Gauges are read back from the
prometheus-client registry. Bad input tried: a negative and a zero ``since``, a window without
traffic, a full buffer (oldest dropped), a vector of zeros, a NaN number, a database written by a
newer schema (refused).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from sovereign.config import DriftSettings
from sovereign.errors import ConfigError, EngineUnavailableError, InvalidRequestError
from sovereign.observability.drift import CATEGORY, NUMBER, PROMPT, VECTOR, DriftRecorder
from sovereign.observability.drift_derive import detect_language, script_of, to_rows
from sovereign.observability.drift_monitor import DriftMonitor
from sovereign.observability.drift_store import DriftStore
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio
WINDOW_S = 1000.0
ENGLISH = ["How do I read a file in Python?", "What does the len function return?",
           "Explain list comprehensions please.", "Which module parses JSON?"]
FRENCH = ["Comment lire un fichier en Python ?", "Que renvoie la fonction len exactement ?",
          "Expliquez les compréhensions de liste, s'il vous plaît.", "Quel module analyse le JSON ?"]


def gauge(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def traffic(recorder: DriftRecorder, start: float, n: int, seed: int, *, shifted: bool = False) -> None:
    """``n`` requests' observations between ``start`` and ``start + 400`` s (Unix), one generator:
    the shifted one moves 20+ points of routes and models, writes French, longer prompts and
    lower retrieval scores, and asks queries from another direction of the embedding space."""
    rng = np.random.default_rng(seed)
    direction = np.zeros(16, dtype=np.float32)
    direction[3 if shifted else 0] = 3.0
    for i in range(n):
        at = start + 400.0 * i / n
        route = "direct" if rng.random() < (0.6 if shifted else 0.3) else "retrieve"
        model = "big" if rng.random() < (0.5 if shifted else 0.2) else "small"
        prompt = (FRENCH if shifted else ENGLISH)[i % 4]
        recorder.buffer.extend([
            (CATEGORY, "route", route, at), (CATEGORY, "model", model, at), (CATEGORY, "finish_reason", "stop", at),
            (NUMBER, "prompt_tokens", float(rng.poisson(60 if shifted else 30)), at),
            (NUMBER, "retrieval_score", float(rng.normal(0.55 if shifted else 0.6, 0.1)), at),
            (PROMPT, "language", prompt, at),
            (VECTOR, "query_projection", direction + rng.standard_normal(16).astype(np.float32), at),
        ])


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[DriftMonitor]:
    store = DriftStore(tmp_path / "drift.sqlite")
    await store.open()
    settings = DriftSettings(enabled=True, window_s=WINDOW_S, min_samples=100, flush_s=0.05, check_s=0.05)
    recorder = DriftRecorder()
    recorder.enable(100_000)
    yield DriftMonitor(settings, store, recorder)
    await store.close()


async def test_auto_baseline_then_resample_is_quiet_and_a_shift_is_detected(monitor: DriftMonitor) -> None:
    now = time.time()
    traffic(monitor.recorder, now - WINDOW_S, 400, seed=0)  # an hour of "normal" traffic, written a window ago
    assert await monitor.flush() == 400 * 8  # 7 observations a request, the vector gives 2 projections
    report = await monitor.check(now)  # a full window exists: auto_baseline captures it
    assert report["baseline"] is not None and report["baseline"]["n"]["route"] == 400
    assert report["drifted"] == []

    traffic(monitor.recorder, now + 1000, 400, seed=7)  # the next hour: a resample of the same traffic
    await monitor.flush()
    quiet = await monitor.check(now + 1500)
    assert quiet["drifted"] == [], [(s["signal"], s["tests"]) for s in quiet["signals"] if s["detected"]]
    by_signal = {s["signal"]: s for s in quiet["signals"]}
    assert by_signal["route"]["window_n"] == 400 and by_signal["route"]["status"] == "ok"
    assert gauge("sovereign_drift_detected", signal="route") == 0
    assert gauge("sovereign_drift_window_samples", signal="prompt_tokens") == 400

    traffic(monitor.recorder, now + 2500, 400, seed=8, shifted=True)
    await monitor.flush()
    shifted = await monitor.check(now + 3000)
    expected = {"route", "model", "language", "prompt_tokens", "retrieval_score", "query_projection_0",
                "query_projection_1"}
    assert expected - {"query_projection_0", "query_projection_1"} <= set(shifted["drifted"])
    assert {"query_projection_0", "query_projection_1"} & set(shifted["drifted"])
    assert "finish_reason" not in shifted["drifted"] and "collection" not in shifted["drifted"]
    for signal in expected & set(shifted["drifted"]):
        assert gauge("sovereign_drift_detected", signal=signal) == 1
    assert gauge("sovereign_drift_score", signal="route", test="chi2") >= 0.1
    assert gauge("sovereign_drift_p_value", signal="prompt_tokens", test="ks") < 0.001
    assert gauge("sovereign_drift_score", signal="prompt_tokens", test="psi") >= 0.2
    assert gauge("sovereign_drift_detected", signal="collection") == 0  # no data: insufficient
    assert gauge("sovereign_drift_p_value", signal="collection", test="chi2") == 1
    language = {s["signal"]: s for s in shifted["signals"]}["language"]
    assert "fr" in language["chart"]["labels"] and language["baseline_n"] == 400


async def test_capture_baseline_on_demand_and_bad_since(monitor: DriftMonitor) -> None:
    now = time.time()
    with pytest.raises(InvalidRequestError, match="No traffic"):  # bad input: an empty window
        await monitor.capture_baseline(60)
    for since in (-5.0, 0.0):  # bad input: not a positive number of seconds
        with pytest.raises(InvalidRequestError, match="positive") as exc:
            await monitor.capture_baseline(since)
        assert exc.value.param == "since"
    traffic(monitor.recorder, now - 500, 300, seed=1, shifted=True)
    summary = await monitor.capture_baseline(600, now=now)
    assert summary["id"] >= 1 and summary["n"]["model"] == 300 and summary["n"]["query_projection_0"] == 300
    traffic(monitor.recorder, now + 100, 300, seed=2, shifted=True)
    await monitor.flush()
    report = await monitor.check(now + 600)
    assert report["baseline"]["id"] == summary["id"] and report["drifted"] == []


async def test_background_loop_flushes_checks_and_stops(monitor: DriftMonitor) -> None:
    recorder = monitor.recorder
    monitor.start()  # re-enables the recorder with drift.max_buffer
    request = GenerationRequest(model="m", sampling=SamplingParams(), messages=(
        ChatMessage("system", "Be brief."), ChatMessage("user", "Quelle heure est-il à Paris ?" * 50)))
    recorder.observe_prompt(request)
    recorder.record_category("model", "m")
    recorder.record_number("prompt_tokens", float("nan"))  # bad input: dropped by the flush
    recorder.observe_query_vector(np.zeros(8, dtype=np.float32))  # bad input: no direction
    assert len(recorder.buffer) == 4 and len(recorder.buffer[0][2]) == 300  # truncated prompt
    for _ in range(100):
        await asyncio.sleep(0.05)
        if monitor.report is not None and not recorder.buffer:
            break
    assert monitor.report is not None
    counts = {s["signal"]: s["window_n"] for s in monitor.report["signals"]}
    assert counts["language"] == 1 and counts["model"] == 1 and counts["prompt_tokens"] == 0
    assert counts["query_projection_0"] == 0
    await monitor.close()  # closes the store too (the fixture's second close is a no-op)
    assert not recorder.enabled and monitor._task is None


def test_recorder_off_is_a_no_op_and_a_full_buffer_drops_the_oldest() -> None:
    recorder = DriftRecorder()
    recorder.record_category("model", "m")
    recorder.observe_query_vector(np.ones(4))
    assert not recorder.buffer
    recorder.enable(100)
    for i in range(150):  # bad input: more than max_buffer between two flushes
        recorder.record_number("prompt_tokens", i)
    assert len(recorder.buffer) == 100 and recorder.dropped == 50
    drained = recorder.drain()
    assert [o[2] for o in drained] == list(range(50, 150)) and not recorder.buffer
    recorder.record_category("finish_reason", None)
    assert recorder.drain()[0][2] == "none"


def test_language_detection_and_the_script_fallback() -> None:
    assert detect_language("Bonjour, comment allez-vous aujourd'hui ?") == "fr"
    assert detect_language("   ") == "none"
    assert script_of("Привет, как дела?") == "script:cyrillic"
    assert script_of("東京はどこですか") == "script:hiragana" and script_of("北京在哪里") == "script:cjk"
    assert script_of("1234 !!") == "script:none"
    rows = to_rows([(VECTOR, "query_projection", np.ones(4, dtype=np.float32), 1.0)])
    assert [r[1] for r in rows] == ["query_projection_0", "query_projection_1"]
    assert rows[0][3] is not None and abs(rows[0][3]) <= 1.0 + 1e-6  # a unit query on a unit direction


async def test_the_app_state_says_off_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    from sovereign.backends.registry import ModelRegistry
    from sovereign.config import load_settings
    from sovereign.server.state import AppState

    with pytest.raises(EngineUnavailableError, match=r"drift\.enabled"):
        AppState(load_settings(data_dir=tmp_path), ModelRegistry()).require_drift()
    path = tmp_path / "drift.sqlite"
    store = DriftStore(path)
    await store.open()
    assert store.schema_version == 1
    await store.close()
    with sqlite3.connect(path) as conn:  # bad input: a database migrated by a newer Sovereign
        conn.execute("INSERT INTO _sovereign_migrations VALUES ('drift', 'm999_future', 0)")
    with pytest.raises(ConfigError, match="newer Sovereign"):
        await DriftStore(path).open()


async def test_call_sites_record_into_the_global_recorder() -> None:
    """TokenClock (model, finish reason, prompt tokens) and the agents' router node (route)."""
    from sovereign.agents.nodes import router as router_node
    from sovereign.agents.state import AgentDeps, RunContext
    from sovereign.config import AgentSettings
    from sovereign.observability.drift import RECORDER
    from sovereign.observability.token_clock import TokenClock
    from sovereign.types import GenerationChunk, Usage

    RECORDER.enable(1000)
    try:
        clock = TokenClock("smollm2", {})
        clock.tick(GenerationChunk("Hi", Usage(12, 1)))
        clock.tick(GenerationChunk("", Usage(12, 1), finish_reason="length"))  # the last chunk has no text
        clock.finish(Usage(12, 1))
        # a greeting is decided by the rules: the model is never called
        deps = AgentDeps(model=None, retriever=lambda: None, embedder=None, settings=AgentSettings())  # type: ignore[arg-type]
        await router_node.run({"question": "hello there"}, RunContext(deps, SamplingParams()))
        seen = [(kind, signal, value) for kind, signal, value, _at in RECORDER.drain()]
    finally:
        RECORDER.disable()
    assert seen == [(CATEGORY, "model", "smollm2"), (CATEGORY, "finish_reason", "length"),
                    (NUMBER, "prompt_tokens", 12), (CATEGORY, "route", "direct")]
