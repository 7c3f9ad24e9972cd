"""The response cache through a live gateway with the official ``openai`` SDK (real model, real HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LiveServer, start_server

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"
HEADER = "x-sovereign-cache"


def redis_gateway(tmp_dir: Any, redis_url: str) -> LiveServer:
    """A gateway process on the Redis cache backend at ``redis_url`` (100 ms cache budget)."""
    return start_server(
        tmp_dir,
        {
            "SOVEREIGN_CACHE__BACKEND": "redis",
            "SOVEREIGN_CACHE__TIMEOUT_MS": "100",
            "SOVEREIGN_CACHE__REDIS_URL_ENV": "SOV_TEST_REDIS_URL",
            "SOV_TEST_REDIS_URL": redis_url,
        },
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, redis_proc: Any) -> Iterator[LiveServer]:
    """One gateway on the Redis backend (the sqlite backend is covered by the contract and plugin tests);
    the Redis outage test runs last."""
    server = redis_gateway(tmp_path_factory.mktemp("cache-gw"), redis_proc.url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def second_gateway(tmp_path_factory: pytest.TempPathFactory, redis_proc: Any) -> Iterator[LiveServer]:
    """Another gateway process (own data directory) sharing the first one's Redis."""
    server = redis_gateway(tmp_path_factory.mktemp("cache-gw-b"), redis_proc.url)
    yield server
    server.stop()


def cache_errors(gateway: LiveServer) -> float:
    """``sovereign_cache_errors_total{backend="redis"}`` scraped from the gateway's /metrics."""
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if line.startswith('sovereign_cache_errors_total{backend="redis"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def client(gateway: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def ask(client: openai.OpenAI, question: str, **extra: Any) -> tuple[str, str, dict[str, Any]]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0, **extra
    )
    body = raw.parse()
    return raw.headers[HEADER], body.choices[0].message.content or "", body.model_extra["sovereign"]["cache"]


def sse(url: str, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        status = response.headers[HEADER]
    assert lines[-1] == "[DONE]"
    return status, [json.loads(line) for line in lines[:-1]]


def test_repeat_is_an_exact_hit_with_the_same_answer(client: openai.OpenAI) -> None:
    status, first, info = ask(client, "What is the capital of France?")
    assert status == "miss" and info["status"] == "miss"
    status, again, info = ask(client, "What is the capital of France?")
    assert status == "hit-exact" and again == first and info["similarity"] == 1.0


def test_reworded_question_is_a_semantic_hit_and_near_miss_is_not(client: openai.OpenAI) -> None:
    status, answer, _ = ask(client, "How do I sort a list in ascending order in Python?")
    assert status == "miss"
    status, reworded, info = ask(client, "How can I sort a list in ascending order in Python?")
    assert status == "hit-semantic" and reworded == answer and info["similarity"] >= 0.91
    assert ask(client, "How do I sort a list in descending order in Python?")[0] == "miss"


def test_stream_replay_has_the_live_event_shapes(gateway: LiveServer, client: openai.OpenAI) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name three colors."}],
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    live_status, live = sse(gateway.url, body)
    hit_status, replay = sse(gateway.url, body)
    assert (live_status, hit_status) == ("miss", "hit-exact")

    def shape(events: list[dict[str, Any]]) -> list[Any]:
        return [
            (
                sorted(e),
                [sorted(c) for c in e["choices"]],
                [sorted(c.get("delta", {})) for c in e["choices"]],
                [c["finish_reason"] for c in e["choices"]],
            )
            for e in events
        ]

    assert shape(replay) == shape(live)
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")  # the engine's prompt-cache details are live only
    assert [live[-1]["usage"][k] for k in counts] == [replay[-1]["usage"][k] for k in counts]
    text = lambda events: "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])  # noqa: E731
    assert text(replay) == text(live)
    assert replay[-2]["sovereign"]["cache"]["status"] == "hit-exact"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=body["messages"], max_tokens=12, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == text(live)  # stream options are not in the scope: the SDK reads a replay too


def test_controls_bypass_and_no_cache(client: openai.OpenAI, gateway: LiveServer) -> None:
    ask(client, "Say hello.")
    assert ask(client, "Say hello.", extra_headers={"Cache-Control": "no-cache"})[0] == "miss"
    assert ask(client, "Say hello.", extra_body={"cache": "off"})[0] == "bypass"
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0.8
    )
    assert raw.headers[HEADER] == "bypass"  # not reproducible

    def sampled(**extra: Any) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Say goodbye."}],
            max_tokens=8,
            temperature=0.8,
            seed=7,
            **extra,
        )
        return raw.headers[HEADER]

    assert [sampled(), sampled()] == ["bypass", "bypass"]  # a seed alone does not opt in
    assert [sampled(extra_body={"cache": "force"}), sampled(extra_body={"cache": "force"})] == ["miss", "hit-exact"]
    assert ask(client, "Say hello.", extra_body={"cache": "no-store"})[0] == "hit-exact"
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'sovereign_cache_lookups_total{layer="exact",result="hit"}' in metrics


def test_server_side_conversation_turns_bypass_the_cache(client: openai.OpenAI) -> None:
    # the same words twice in a conversation whose history lives on the server must not hit
    for _ in range(2):
        status, _text, info = ask(client, "What is the capital of Spain?", extra_body={"conversation_id": "conv-7"})
        assert status == "bypass" and info["status"] == "bypass"


def test_two_gateways_share_one_redis_cache(client: openai.OpenAI, second_gateway: LiveServer) -> None:
    """Scale-out: asked on gateway A, answered from the cache on gateway B (exact and reworded)."""
    with openai.OpenAI(base_url=second_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120) as b:
        status, answer, _ = ask(client, "How do I copy a file in Python?")
        assert status == "miss"
        status, on_b, info = ask(b, "How do I copy a file in Python?")
        assert status == "hit-exact" and on_b == answer and info["similarity"] == 1.0
        status, reworded, info = ask(b, "How can I copy a file in Python?")  # B's index followed A's write
        assert status == "hit-semantic" and reworded == answer and info["similarity"] >= 0.91
        assert ask(b, "How do I move a file in Python?")[0] == "miss"


def test_a_paused_redis_is_a_counted_miss(client: openai.OpenAI, gateway: LiveServer, redis_proc: Any) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP): the engine answers, the cache
    gives up after its budget (no retries) and counts the failures."""
    assert ask(client, "What is a socket?")[0] == "miss"
    assert ask(client, "What is a socket?")[0] == "hit-exact"
    before = cache_errors(gateway)
    with redis_proc.paused():
        began = time.perf_counter()
        status, answer, info = ask(client, "What is a socket?")
        elapsed = time.perf_counter() - began
    assert status == "miss" and info["status"] == "miss" and answer
    # budget: exact read + candidate fetch (100 ms each) + store (400 ms) + generating 8 tokens
    assert elapsed < 5.0, elapsed
    assert cache_errors(gateway) >= before + 2
    deadline = time.monotonic() + 5
    while ask(client, "What is a socket?")[0] != "hit-exact" and time.monotonic() < deadline:
        time.sleep(0.1)  # the client reconnects by itself
    assert ask(client, "What is a socket?")[0] == "hit-exact"


def test_redis_going_down_fails_no_request(client: openai.OpenAI, gateway: LiveServer, redis_proc: Any) -> None:
    assert ask(client, "What is Redis?")[0] == "miss"
    assert ask(client, "What is Redis?")[0] == "hit-exact"
    redis_proc.stop()
    try:
        status, answer, _ = ask(client, "What is Redis?")
        assert status == "miss" and answer  # served by the engine
        assert ask(client, "What is a cache?")[0] == "miss"
    finally:
        redis_proc.start()
    assert 'sovereign_cache_errors_total{backend="redis"}' in httpx.get(gateway.url + "/metrics").text
    assert ask(client, "What is Redis?")[0] == "miss"  # Redis came back empty: stored afresh
    assert ask(client, "What is Redis?")[0] == "hit-exact"
