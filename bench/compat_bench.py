"""Client compatibility matrix and tool-call streaming overhead, against two live gateways.

Run: ``.venv/bin/python bench/compat_bench.py [--repeats 10]``; prints a Markdown table and one JSON
object, writes ``bench/results/compat.json``.

Targets: (1) ``embedded``: ``sovereign serve`` on its managed llama-server (SmolLM2-135M);
(2) ``remote``: ``sovereign serve`` whose model ``smol-remote`` is a deployment of kind
``llamacpp-server`` pointing at a plain llama-server started here (the remote-engine path).
Each check drives a real client (openai, LangChain, the OpenAI Agents SDK, anthropic) and passes
when the client call succeeds and the answer has the guaranteed shape (finish reason, a valid
forced tool call, a parsed structure when the model stopped). Overhead: ``--repeats`` streamed
chat requests with ``tools`` (``tool_choice: auto``), alternately sent to the plain llama-server
and through the remote gateway; TTFT (first SSE data event with content or a tool call) and total
time, p50 and spread. Bounded: every process is killed in ``finally``; each check has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from sovereign.backends.llama_process import free_port
from sovereign.testing.llama_server import llama_server_args

RESULTS = Path(__file__).parent / "results"
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Pick(BaseModel):
    colour: Literal["red", "blue"]


def wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def gateway(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    proc = subprocess.Popen([sys.executable, "-m", "sovereign", "serve", "--port", str(port), "--log-level", "warning"],
                            env={**clean, "SOVEREIGN_DATA_DIR": str(data), "SOVEREIGN_CACHE__ENABLED": "false", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait(url + "/readyz", proc)
    return proc, url


# -- checks: each raises on failure ------------------------------------------------------------

def openai_client(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)


def check_openai_chat(url: str, model: str) -> None:
    r = openai_client(url).chat.completions.create(model=model, messages=ASK, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage and r.usage.completion_tokens > 0


def check_openai_stream(url: str, model: str) -> None:
    chunks = list(openai_client(url).chat.completions.create(model=model, messages=ASK, max_tokens=8, stream=True,
                                                             stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and any(c.choices and c.choices[0].finish_reason for c in chunks)


def check_openai_tools(url: str, model: str) -> None:
    client = openai_client(url)
    first = client.chat.completions.create(model=model, messages=ASK, tools=[TOOL], tool_choice="required",
                                           max_tokens=64, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and set(json.loads(call.function.arguments)) == {"city"}
    again = client.chat.completions.create(model=model, tools=[TOOL], max_tokens=8, messages=[
        *ASK, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert again.choices[0].finish_reason in ("stop", "length", "tool_calls")


def check_openai_tools_stream(url: str, model: str) -> None:
    pieces = []
    for chunk in openai_client(url).chat.completions.create(model=model, messages=ASK, tools=[TOOL], max_tokens=64,
                                                            tool_choice="required", stream=True, temperature=0):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            pieces.append(d.function.arguments or "")
    assert set(json.loads("".join(pieces))) == {"city"}


def check_openai_parse(url: str, model: str) -> None:
    import openai

    try:
        r = openai_client(url).chat.completions.parse(model=model, messages=[{"role": "user", "content": "red?"}],
                                                      response_format=Pick, max_tokens=80, temperature=0)
    except openai.LengthFinishReasonError:
        return  # grammar-valid but cut short by the budget: the client's documented outcome
    assert isinstance(r.choices[0].message.parsed, Pick)


def check_openai_logprobs(url: str, model: str) -> None:
    r = openai_client(url).chat.completions.create(model=model, messages=ASK, max_tokens=3, logprobs=True,
                                                   top_logprobs=2, temperature=0)
    assert r.choices[0].logprobs and len(r.choices[0].logprobs.content or []) == r.usage.completion_tokens


def check_openai_n(url: str, model: str) -> None:
    r = openai_client(url).chat.completions.create(model=model, messages=ASK, max_tokens=3, n=2)
    assert [c.index for c in r.choices] == [0, 1]


def check_openai_embeddings(url: str, model: str) -> None:
    r = openai_client(url).embeddings.create(model="all-minilm-l6-v2", input=["hello"])
    assert len(r.data[0].embedding) == 384


def check_openai_responses(url: str, model: str) -> None:
    r = openai_client(url).responses.create(model=model, input="Say hi.", max_output_tokens=8)
    assert isinstance(r.output_text, str) and r.usage and r.usage.output_tokens > 0


def check_openai_responses_tools(url: str, model: str) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "weather", "strict": False,
            "parameters": TOOL["function"]["parameters"]}
    r = openai_client(url).responses.create(model=model, input="Weather in Paris?", tools=[tool],
                                            tool_choice="required", max_output_tokens=64)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and set(json.loads(calls[0].arguments)) == {"city"}


def check_langchain_tools(url: str, model: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=model, base_url=url + "/v1", api_key="unused", max_tokens=64, temperature=0, max_retries=0)
    call = llm.bind_tools([TOOL], tool_choice="get_weather").invoke("Weather in Oslo?").tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


def check_langchain_structured(url: str, model: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=model, base_url=url + "/v1", api_key="unused", max_tokens=80, temperature=0, max_retries=0)
    out = llm.with_structured_output(Pick, include_raw=True).invoke("Pick red or blue.")
    assert out["raw"].response_metadata["finish_reason"] != "stop" or isinstance(out["parsed"], Pick)


def check_agents_sdk(url: str, model: str, mode: str) -> None:
    from openai import AsyncOpenAI

    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        seen.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    llm = (OpenAIResponsesModel(model=model, openai_client=client) if mode == "responses"
           else OpenAIChatCompletionsModel(model=model, openai_client=client))
    agent = Agent(name="w", instructions="Use the tool.", tools=[get_weather], model=llm,
                  model_settings=ModelSettings(tool_choice="required", max_tokens=64),
                  tool_use_behavior="stop_on_first_tool")
    result = asyncio.run(Runner.run(agent, "Weather in Paris?", max_turns=3))
    assert seen and result.final_output == f"sunny in {seen[0]}"


def check_anthropic(url: str, model: str, stream: bool = False, tools: bool = False) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=300)
    kwargs: dict[str, Any] = {"model": model, "max_tokens": 64 if tools else 8,
                              "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    if tools:
        kwargs |= {"tools": [{"name": "get_weather", "description": "weather",
                              "input_schema": TOOL["function"]["parameters"]}], "tool_choice": {"type": "any"}}
    if stream:
        with client.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    if tools:
        assert message.stop_reason == "tool_use" and any(b.type == "tool_use" for b in message.content)
    else:
        assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0


CHECKS: list[tuple[str, str, Callable[[str, str], None]]] = [
    ("openai", "chat", check_openai_chat),
    ("openai", "stream + include_usage", check_openai_stream),
    ("openai", "tools round trip", check_openai_tools),
    ("openai", "tool-call streaming", check_openai_tools_stream),
    ("openai", "parse (pydantic, json_schema)", check_openai_parse),
    ("openai", "logprobs", check_openai_logprobs),
    ("openai", "n=2", check_openai_n),
    ("openai", "embeddings", check_openai_embeddings),
    ("openai", "responses", check_openai_responses),
    ("openai", "responses + function tool", check_openai_responses_tools),
    ("langchain", "bind_tools", check_langchain_tools),
    ("langchain", "with_structured_output", check_langchain_structured),
    ("openai-agents", "Runner, Responses mode", lambda u, m: check_agents_sdk(u, m, "responses")),
    ("openai-agents", "Runner, chat-completions mode", lambda u, m: check_agents_sdk(u, m, "chat")),
    ("anthropic", "messages", check_anthropic),
    ("anthropic", "messages stream", lambda u, m: check_anthropic(u, m, stream=True)),
    ("anthropic", "tool use", lambda u, m: check_anthropic(u, m, tools=True)),
]


def run_checks(url: str, model: str) -> list[dict[str, Any]]:
    rows = []
    for client, name, check in CHECKS:
        started = time.perf_counter()
        try:
            check(url, model)
            row = {"client": client, "check": name, "ok": True}
        except Exception as exc:  # a failed check is a row, not the end of the run
            row = {"client": client, "check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
    return rows


def timed_stream(url: str, model: str) -> tuple[float, float]:
    body = {"model": model, "messages": ASK, "tools": [TOOL], "tool_choice": "auto", "max_tokens": 24,
            "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and ('"content"' in line or '"tool_calls"' in line):
                first = time.perf_counter() - started
    return first or float("nan"), time.perf_counter() - started


def overhead(direct: str, via: str, model: str, repeats: int) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    for i in range(repeats):
        order = [("direct", direct, "smol-remote"), ("gateway", via, model)]
        for name, url, m in order if i % 2 == 0 else order[::-1]:
            samples[name].append(timed_stream(url, m))

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(values) * 1000, 1), "min_ms": round(min(values) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1)}

    out = {k: {"ttft": stats([t for t, _ in v]), "total": stats([t for _, t in v])} for k, v in samples.items()}
    out["added_p50_ms"] = {m: round(out["gateway"][m]["p50_ms"] - out["direct"][m]["p50_ms"], 1)
                           for m in ("ttft", "total")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, Any] = {"checks": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            llama = subprocess.Popen(llama_server_args(port, "smol-remote", n_ctx=2048, threads=2, parallel=2),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(llama)
            remote_root = f"http://127.0.0.1:{port}"
            wait(remote_root + "/health", llama)
            embedded, embedded_url = gateway(Path(tmp) / "embedded", {"SOVEREIGN_ENGINE__N_CTX": "2048"})
            procs.append(embedded)
            report["checks"]["embedded"] = run_checks(embedded_url, "smollm2-135m-instruct")
            embedded.terminate()
            config = Path(tmp) / "remote.toml"
            config.write_text(
                '[backends]\ndefault_route = "smol-remote"\n[[backends.deployments]]\nname = "llama-remote"\n'
                f'model = "smol-remote"\nengine = "llamacpp-server"\nbase_url = "{remote_root}/v1"\n'
                'context_window = 2048\n')
            remote, remote_url = gateway(Path(tmp) / "remote", {"SOVEREIGN_CONFIG": str(config),
                                                                "SOVEREIGN_ENGINE__N_PARALLEL": "1"})
            procs.append(remote)
            report["checks"]["remote"] = run_checks(remote_url, "smol-remote")
            report["tool_stream_overhead"] = overhead(remote_root, remote_url, "smol-remote", args.repeats)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compat.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| client | check | embedded | llama.cpp server (remote) |\n|---|---|---|---|")
    for a, b in zip(report["checks"]["embedded"], report["checks"]["remote"], strict=True):
        mark = {True: "pass", False: "FAIL"}
        print(f"| {a['client']} | {a['check']} | {mark[a['ok']]} | {mark[b['ok']]} |")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
