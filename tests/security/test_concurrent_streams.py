"""Load: 200 streaming clients at once against a real gateway on loopback, zero errors.

A real ``sovereign serve`` process (the embedded SmolLM2 on llama-server) with room for every
client: ``engine.n_parallel`` slots plus ``engine.max_queue`` waiting requests >= 200. 200 httpx
clients, released together by one event, each stream a chat completion of at most 8 tokens. Every
stream must answer 200 with ``text/event-stream``, carry chunks of one completion id, end with a
finish reason and ``data: [DONE]``, and hold no error event; p50/p95 of the time to first token and
of the whole stream are printed.

Bad inputs tried: the same burst against a gateway whose engine admits fewer requests than there
are clients (``n_parallel + max_queue`` < 200) must be refused in part with 503
``engine_overloaded`` (never a hang, a 500 or a broken stream), which shows the checks above can fail.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 200
MAX_TOKENS = 8
MODEL = "smollm2-135m-instruct"
BUDGET_S = 90.0
ENGINE = {"SOVEREIGN_ENGINE__N_CTX": "256", "SOVEREIGN_CACHE__ENABLED": "false",
          "SOVEREIGN_OBSERVABILITY__LOG_LEVEL": "WARNING"}


@dataclass
class Stream:
    """What one client saw: status, content type, timings (s), events, and what was wrong."""

    status: int = 0
    content_type: str = ""
    ttft_s: float | None = None
    total_s: float = 0.0
    ids: set[str] = field(default_factory=set)
    finish_reasons: list[str] = field(default_factory=list)
    done: int = 0
    errors: list[str] = field(default_factory=list)


async def one_stream(client: httpx.AsyncClient, go: asyncio.Event, i: int) -> Stream:
    body = {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": True, "temperature": 0.7, "seed": i,
            "messages": [{"role": "user", "content": f"Say something about the number {i}."}]}
    seen = Stream()
    await go.wait()
    start = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            seen.status, seen.content_type = response.status_code, response.headers.get("content-type", "")
            if response.status_code != 200:
                seen.errors.append((await response.aread()).decode(errors="replace")[:300])
                return seen
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    seen.done += 1
                    continue
                event = json.loads(data)
                if "error" in event:
                    seen.errors.append(data[:300])
                    continue
                if seen.ttft_s is None:
                    seen.ttft_s = time.perf_counter() - start
                seen.ids.add(event["id"])
                for choice in event.get("choices", []):
                    if choice.get("finish_reason"):
                        seen.finish_reasons.append(choice["finish_reason"])
    except httpx.HTTPError as exc:
        seen.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        seen.total_s = time.perf_counter() - start
    return seen


async def burst(url: str, clients: int) -> tuple[list[Stream], float]:
    """``clients`` streams released at once; returns what each saw and the wall time in seconds."""
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(BUDGET_S)) as client:
        go = asyncio.Event()
        tasks = [asyncio.create_task(one_stream(client, go, i)) for i in range(clients)]
        await asyncio.sleep(0.1)  # every task is waiting on the event
        start = time.perf_counter()
        go.set()
        streams = await asyncio.gather(*tasks)
        return list(streams), time.perf_counter() - start


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def complete(stream: Stream) -> bool:
    return (stream.status == 200 and stream.content_type.startswith("text/event-stream") and stream.done == 1
            and len(stream.ids) == 1 and stream.finish_reasons[-1:] in (["stop"], ["length"])
            and not stream.errors)


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("load"), {
        **ENGINE, "SOVEREIGN_ENGINE__N_PARALLEL": "32", "SOVEREIGN_ENGINE__MAX_QUEUE": "256"})
    yield server
    server.stop()


def test_200_concurrent_streams_complete_without_an_error(roomy_server: LiveServer) -> None:
    streams, wall_s = asyncio.run(burst(roomy_server.url, CLIENTS))
    bad = [(i, s) for i, s in enumerate(streams) if not complete(s)]
    ttfts = [s.ttft_s for s in streams if s.ttft_s is not None]
    totals = [s.total_s for s in streams]
    print(f"\n{CLIENTS} concurrent streams: wall {wall_s:.1f} s; TTFT p50 {percentile(ttfts, 50):.2f} s, "
          f"p95 {percentile(ttfts, 95):.2f} s; stream p50 {percentile(totals, 50):.2f} s, "
          f"p95 {percentile(totals, 95):.2f} s; {len(bad)} errors")
    assert bad == [], bad[:5]
    assert len(ttfts) == CLIENTS
    assert wall_s < BUDGET_S
    assert roomy_server.proc.poll() is None  # the gateway is still up, and still answers
    assert httpx.get(roomy_server.url + "/readyz", timeout=10).status_code == 200


def test_a_burst_beyond_the_engine_queue_is_refused_with_503_not_broken(tmp_path: Path) -> None:
    server = start_server(tmp_path, {**ENGINE, "SOVEREIGN_ENGINE__N_PARALLEL": "2",
                                     "SOVEREIGN_ENGINE__MAX_QUEUE": "8"})
    try:
        streams, _ = asyncio.run(burst(server.url, 60))
    finally:
        server.stop()
    refused = [s for s in streams if s.status == 503]
    served = [s for s in streams if complete(s)]
    assert len(refused) + len(served) == len(streams), [s for s in streams if s.status not in (200, 503)][:3]
    assert refused and served  # some admitted (<= 2 + 8 at a time), the rest refused at once
    assert all("engine_overloaded" in s.errors[0] for s in refused)
