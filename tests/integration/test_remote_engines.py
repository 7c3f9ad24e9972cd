"""Remote engines through a live gateway: a real llama-server, the fault-injection engine,
retries, fallback (JSON and streaming), breaker open / half-open / closed, timeouts, context trimming,
runtime switching with a conversation, and a SIGKILL of the real engine during load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from sovereign.testing.llama_server import llama_server_args
from tests.conftest import LiveServer, free_port, start_server, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Proc:
    def __init__(self, args: list[str], port: int, log: Path, ready_path: str) -> None:
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        wait_ready(self.url + ready_path, self.proc, log, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    proc = Proc(
        [sys.executable, "-m", "sovereign.testing.fault_engine", "--port", str(port)],
        port,
        tmp_path_factory.mktemp("fault") / "fault.log",
        "/health",
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A plain llama-server serving SmolLM2 (the real second engine)."""
    port = free_port()
    proc = Proc(
        llama_server_args(port, "smol-remote"),
        port,
        tmp_path_factory.mktemp("llama") / "llama.log",
        "/health",
    )
    warm = {"model": "smol-remote", "messages": [{"role": "user", "content": "hi " * 300}], "max_tokens": 1}
    httpx.post(proc.url + "/v1/chat/completions", json=warm, timeout=120).raise_for_status()  # first call is slow
    yield proc
    proc.stop()


def _toml(fault: Proc, llama: Proc) -> str:
    def dep(
        name: str, model: str, engine: str, base: str | None, served: str | None, window: int | None, weight: float
    ) -> str:
        lines = [f'name = "{name}"', f'model = "{model}"', f'engine = "{engine}"', f"weight = {weight}"]
        lines += [f'base_url = "{base}/v1"'] if base else []
        lines += [f'served_model = "{served}"'] if served else []
        lines += [f"context_window = {window}"] if window else []
        return "[[backends.deployments]]\n" + "\n".join(lines) + "\n"

    return (
        "[engine]\nn_ctx = 1024\nn_threads = 1\n"
        "[backends]\nretry_attempts = 3\nretry_initial_s = 0.05\nretry_jitter_s = 0.0\n"
        "first_token_timeout_s = 10.0\nbreaker_failures = 3\nbreaker_cooldown_s = 1.5\nhealth_interval_s = 0\n"
        '[backends.aliases]\n"gpt-4o-mini" = "resilient"\n'
        + dep("fault", "resilient", "vllm", fault.url, "fault", 4096, 1)
        + dep("remote-llama", "resilient", "llamacpp-server", llama.url, "smol-remote", 256, 0)
        + dep("fault-small", "trim", "vllm", fault.url, "fault", 256, 1)
        + dep("remote", "smol-remote", "llamacpp-server", llama.url, "smol-remote", 1024, 1)
        + dep("local", "smol-remote", "embedded", None, None, None, 0)
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fault: Proc, llama_server: Proc) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("gw")
    config = tmp / "sovereign.toml"
    config.write_text(_toml(fault, llama_server))
    server = start_server(tmp, {"SOVEREIGN_CONFIG": str(config)})
    yield server
    server.stop()


@pytest.fixture
def client(gateway: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=60) as sdk:
        yield sdk


def arm(fault: Proc, mode: str, times: int = -1, **extra: object) -> None:
    httpx.post(fault.url + "/_fault", json={"mode": mode, "times": times, **extra}).raise_for_status()


def fault_requests(fault: Proc) -> int:
    return int(httpx.get(fault.url + "/_stats").json()["requests"])


def breaker(gateway: LiveServer, name: str) -> str:
    rows = httpx.get(gateway.url + "/admin/backends").json()["deployments"]
    return next(r["breaker"] for r in rows if r["name"] == name)


def route_of(response: object) -> dict:
    return (response.model_extra or {})["sovereign"]["route"]  # type: ignore[attr-defined]


HI = [{"role": "user", "content": "Say hi."}]


def test_models_lists_public_names_and_aliases(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"resilient", "trim", "smol-remote", "default", "smollm2-135m-instruct", "gpt-4o-mini"} <= set(models)
    alias = client.models.retrieve("gpt-4o-mini")  # an alias resolves like a model (was 404)
    assert alias.id == "gpt-4o-mini" and alias.object == "model"
    assert alias.owned_by == models["resilient"].owned_by
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_retries_with_backoff_before_first_token(client: openai.OpenAI, fault: Proc) -> None:
    arm(fault, "status", times=2, status=500)
    before = fault_requests(fault)
    response = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=4)  # via alias
    assert route_of(response)["deployment"] == "fault" and route_of(response)["retries"] == 2
    assert fault_requests(fault) - before == 3
    arm(fault, "status", times=1, status=429)
    assert route_of(client.chat.completions.create(model="resilient", messages=HI, max_tokens=4))["retries"] == 1


def test_fallback_json_and_stream_then_breaker_half_open_and_close(
    client: openai.OpenAI, fault: Proc, gateway: LiveServer
) -> None:
    arm(fault, "status", status=503)
    # a long conversation: fits the fault engine's 4096 window, must be trimmed for the 1024 fallback
    turns = [{"role": "system", "content": "You are terse."}]
    for i in range(14):
        turns.append(
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"Turn {i}: " + "the quick brown fox jumps over the lazy dog " * 12,
            }
        )
    turns.append({"role": "user", "content": "Say hi."})
    response = client.chat.completions.create(model="resilient", messages=turns, max_tokens=4)
    route = route_of(response)
    assert route["deployment"] == "remote-llama" and route["fallbacks"] == 1
    assert route["trimmed_messages"] > 0
    assert response.usage is not None and response.usage.prompt_tokens < 256
    assert breaker(gateway, "fault") == "open"  # 3 failed attempts opened it
    seen = fault_requests(fault)
    stream = client.chat.completions.create(model="resilient", messages=HI, max_tokens=6, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (chunks[-1].model_extra or {})["sovereign"]["route"]["deployment"] == "remote-llama"
    assert fault_requests(fault) == seen  # open breaker: skipped without a call
    arm(fault, "ok", times=0)
    time.sleep(1.6)  # cooldown
    assert breaker(gateway, "fault") == "half_open"
    assert (
        route_of(client.chat.completions.create(model="resilient", messages=HI, max_tokens=4))["deployment"] == "fault"
    )
    assert breaker(gateway, "fault") == "closed"


def test_stream_falls_back_after_pre_first_token_failures(gateway: LiveServer, fault: Proc) -> None:
    """Every retry on the fault engine gets a 500 before any token: the stream is served by the
    fallback and the client sees a clean stream, no error event."""
    arm(fault, "status", times=3, status=500)  # retry_attempts = 3: all of them fail
    before = fault_requests(fault)
    body = {"model": "resilient", "messages": HI, "max_tokens": 6, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert fault_requests(fault) - before == 3
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert not [p for p in payloads if "error" in p]
    assert "".join(c["delta"].get("content") or "" for p in payloads for c in p.get("choices") or [])
    route = next(p["sovereign"]["route"] for p in payloads if "sovereign" in p)
    assert route["deployment"] == "remote-llama" and route["fallbacks"] == 1
    # leave the fault engine's breaker closed for the next tests (3 failures opened it)
    arm(fault, "ok", times=0)
    time.sleep(1.6)
    response = httpx.post(gateway.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=60)
    assert response.json()["sovereign"]["route"]["deployment"] == "fault" and breaker(gateway, "fault") == "closed"


@pytest.mark.parametrize("mode", ["hang", "hang_after_headers"])
def test_first_token_timeout_falls_back_without_retry(client: openai.OpenAI, fault: Proc, mode: str) -> None:
    arm(fault, mode, times=1)
    before, started = fault_requests(fault), time.monotonic()
    response = client.chat.completions.create(model="resilient", messages=HI, max_tokens=4)
    assert route_of(response)["deployment"] == "remote-llama"
    assert 10.0 <= time.monotonic() - started < 40
    assert fault_requests(fault) - before == 1  # timeouts are not retried


def test_drop_mid_stream_ends_with_documented_error_event(gateway: LiveServer, fault: Proc) -> None:
    arm(fault, "drop", times=1)
    body = {"model": "resilient", "messages": HI, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "engine_stream_interrupted" and "fault" in error["message"]
    assert json.loads(events[0])["choices"][0]["delta"]["content"]  # tokens were sent first


def test_context_trimmed_to_a_small_window(client: openai.OpenAI, fault: Proc) -> None:
    arm(fault, "ok", times=0)
    messages = [{"role": "system", "content": "Be brief and kind."}]
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "word " * 40} for i in range(9)]
    response = client.chat.completions.create(model="trim", messages=messages, max_tokens=16)
    sent = httpx.get(fault.url + "/_stats").json()["last_body"]["messages"]
    assert sent[0] == messages[0] and sent[-1] == messages[-1]  # system prompt and latest turn kept
    assert len(sent) < len(messages) and sent[1]["role"] == "user"
    assert route_of(response)["trimmed_messages"] == len(messages) - len(sent)
    with pytest.raises(openai.BadRequestError) as too_long:  # latest message alone cannot fit
        client.chat.completions.create(model="trim", messages=[{"role": "user", "content": "w " * 400}], max_tokens=16)
    assert too_long.value.code == "context_length_exceeded"


def test_runtime_switch_continues_conversation_with_full_history(gateway: LiveServer, fault: Proc) -> None:
    arm(fault, "ok", times=0)
    api = httpx.Client(base_url=gateway.url, timeout=60)
    conv = api.post("/v1/conversations", json={}).json()
    first = api.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "My name is Ada.", "max_tokens": 6})
    assert first.status_code == 200 and first.json()["deployment"] == "smollm2-135m-instruct"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    started = time.monotonic()
    cli = subprocess.run(
        [sys.executable, "-m", "sovereign", "backends", "use", "fault", "--url", gateway.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert cli.returncode == 0, cli.stderr
    second = api.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "What is my name?", "max_tokens": 6})
    assert time.monotonic() - started < 5.0
    assert second.json()["deployment"] == "fault"
    sent = httpx.get(fault.url + "/_stats").json()["last_body"]["messages"]
    assert [m["content"] for m in sent][:2] == ["My name is Ada.", first.json()["message"]["content"]]
    assert len(sent) == 3
    assert api.put("/admin/backends/default", json={"route": "remote"}).status_code == 200
    third = api.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "Thanks.", "max_tokens": 4}).json()
    assert third["deployment"] == "remote" and third["history_messages"] == 5
    history = api.get(f"/v1/conversations/{conv['id']}").json()["messages"]
    assert [m["deployment"] for m in history if m["role"] == "assistant"] == [
        "smollm2-135m-instruct",
        "fault",
        "remote",
    ]
    bad = api.put("/admin/backends/default", json={"route": "nope"})
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "route_not_found"
    assert api.post("/v1/conversations/none/messages", json={"content": "x"}).status_code == 404
    api.close()
    cli = subprocess.run(
        [sys.executable, "-m", "sovereign", "backends", "use", "nope", "--url", gateway.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert cli.returncode == 1 and "nope" in cli.stderr


def test_backends_list_cli_shows_health_and_breakers(gateway: LiveServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env["COLUMNS"] = "200"
    out = subprocess.run(
        [sys.executable, "-m", "sovereign", "backends", "list", "--url", gateway.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    for name in ("fault", "remote-llama", "remote", "local", "closed", "up"):
        assert name in out.stdout


def test_sigkill_engine_under_load_loses_no_unstarted_request(
    gateway: LiveServer, llama_server: Proc, client: openai.OpenAI
) -> None:
    """The real engine dies mid-stream: queued JSON requests fall back; the started stream gets the error event."""
    body = {
        "model": "smol-remote",
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
        "max_tokens": 400,
        "stream": True,
        "user": "alice",
    }
    events: list[str] = []
    results: list[object] = []
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        events.append(next(line for line in lines if line.startswith("data: ")))

        def ask(i: int) -> None:
            try:
                r = client.chat.completions.create(model="smol-remote", messages=HI, max_tokens=4, user=f"u{i}")
                results.append(route_of(r)["deployment"])
            except openai.APIError as exc:
                results.append(exc)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the JSON requests are now queued behind the stream inside the engine
        os.kill(llama_server.proc.pid, signal.SIGKILL)
        events += [line for line in lines if line.startswith("data: ")]
        for t in threads:
            t.join(timeout=60)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["error"]["code"] == "engine_stream_interrupted"
    # Every JSON request is answered by the embedded engine: those the dead engine had not started fall
    # back before their first token, and one it was already generating is restarted there (JSON requests
    # are `buffered`: the client has seen nothing yet, so Router.complete restarts them).
    assert results == ["local"] * 4, results
