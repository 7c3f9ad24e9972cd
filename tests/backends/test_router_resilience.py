"""Router resilience against an httpx.MockTransport: connection-error retries, connect / read /
first-token / total timeouts, the active health probe and its breaker transitions, and the probe loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from prometheus_client import REGISTRY

from sovereign.backends.base import collect
from sovereign.backends.breaker import BreakerState, CircuitBreaker
from sovereign.backends.openai_compat import OpenAICompatBackend
from sovereign.backends.router import Deployment, Router
from sovereign.backends.routing_table import probe_forever
from sovereign.config import DeploymentSettings, load_settings
from sovereign.errors import ConfigError, EngineTimeoutError, EngineUnavailableError, StreamInterruptedError
from tests.backends.test_router import FAST, request, sse

pytestmark = pytest.mark.anyio


class Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(
    name: str,
    client: httpx.AsyncClient,
    clock: Clock | None = None,
    *,
    failures: int = 3,
    cooldown_s: float = 60.0,
    weight: float = 1.0,
    **timeouts: float,
) -> Deployment:
    settings = DeploymentSettings(name=name, model="m", engine="vllm", base_url=f"http://{name}/v1", weight=weight)
    backend = OpenAICompatBackend(settings, client, **timeouts)
    breaker = CircuitBreaker(name, failures, cooldown_s, clock=clock or Clock())
    return Deployment(name, backend, breaker, 4096, weight, "vllm", settings.base_url)


def ok(host: str) -> httpx.Response:
    return httpx.Response(200, content=sse("from " + host), headers={"content-type": "text/event-stream"})


def engine_up(name: str) -> float | None:
    return REGISTRY.get_sample_value("sovereign_engine_up", {"engine": name})


# -- retries on connection errors -------------------------------------------------------------------


async def test_connect_errors_are_retried_then_succeed() -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.path)
        if len(calls) <= 2:
            raise httpx.ConnectError("connection refused", request=req)
        return ok(req.url.host)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = make("a", client)
        result = await collect(Router("m", [a], FAST).stream(request()))
    assert result.text == "from a" and result.metadata["route"]["retries"] == 2
    assert calls == ["/v1/chat/completions"] * 3
    assert a.breaker.state is BreakerState.CLOSED and a.breaker.consecutive_failures == 0


async def test_connect_errors_exhaust_retries_then_fall_back() -> None:
    calls: dict[str, int] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        calls[req.url.host] = calls.get(req.url.host, 0) + 1
        if req.url.host == "a":
            raise httpx.ConnectTimeout("connect timed out", request=req)  # unreachable: retried
        return ok(req.url.host)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a, b = make("a", client), make("b", client, weight=0)
        result = await collect(Router("m", [a, b], FAST).stream(request()))
        assert result.metadata["route"] == {"deployment": "b", "retries": 0, "fallbacks": 1, "trimmed_messages": 0}
        assert calls == {"a": FAST.retry_attempts, "b": 1} and a.breaker.state is BreakerState.OPEN
        with pytest.raises(EngineUnavailableError, match="unreachable"):
            await collect(Router("m", [make("a", client)], FAST).stream(request()))


# -- timeouts ---------------------------------------------------------------------------------------


async def test_connect_and_total_timeouts_reach_httpx() -> None:
    seen: dict[str, dict[str, float]] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen[req.url.path] = req.extensions["timeout"]
        if req.url.path == "/tokenize":
            return httpx.Response(200, json={"count": 1})
        return httpx.Response(200) if req.url.path == "/health" else ok("a")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = make("a", client, connect_timeout_s=0.5, total_timeout_s=7.0)
        await collect(a.backend.stream(request()))
        await a.backend.health()  # type: ignore[attr-defined]
        await a.backend.count_text_tokens("hi")  # type: ignore[attr-defined]
    assert seen["/v1/chat/completions"] == {"connect": 0.5, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert seen["/health"]["connect"] == seen["/tokenize"]["connect"] == 0.5
    assert seen["/health"]["read"] == 1.0  # probes and token counts never wait a whole generation


async def test_read_timeout_is_not_retried_and_falls_back() -> None:
    calls: dict[str, int] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        calls[req.url.host] = calls.get(req.url.host, 0) + 1
        if req.url.host == "a":
            raise httpx.ReadTimeout("read timed out", request=req)
        return ok(req.url.host)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        router = Router("m", [make("a", client), make("b", client, weight=0)], FAST)
        assert (await collect(router.stream(request()))).metadata["route"]["deployment"] == "b"
    assert calls == {"a": 1, "b": 1}


async def _stalling(first: bytes | None, stall_s: float) -> AsyncIterator[bytes]:
    if first is not None:
        yield first
    await asyncio.sleep(stall_s)
    yield b"data: [DONE]\n\n"


async def test_first_token_timeout_falls_back_without_retry() -> None:
    calls: dict[str, int] = {}

    async def handler(req: httpx.Request) -> httpx.Response:
        calls[req.url.host] = calls.get(req.url.host, 0) + 1
        if req.url.host == "a":  # headers at once, then silence
            return httpx.Response(200, content=_stalling(None, 30), headers={"content-type": "text/event-stream"})
        return ok(req.url.host)

    policy = replace(FAST, first_token_timeout_s=0.2)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a, b = make("a", client), make("b", client, weight=0)
        started = asyncio.get_running_loop().time()
        result = await collect(Router("m", [a, b], policy).stream(request()))
        elapsed = asyncio.get_running_loop().time() - started
    assert result.metadata["route"]["deployment"] == "b" and calls == {"a": 1, "b": 1}
    assert 0.2 <= elapsed < 2.0 and a.breaker.consecutive_failures == 1


async def test_total_timeout_ends_a_started_stream() -> None:
    first = sse("tok", drop=True)

    async def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_stalling(first, 30), headers={"content-type": "text/event-stream"})

    policy = replace(FAST, total_timeout_s=0.3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        stream = Router("m", [make("a", client)], policy).stream(request())
        assert (await anext(stream)).text == "tok"
        with pytest.raises(StreamInterruptedError) as interrupted:
            await anext(stream)
    assert isinstance(interrupted.value.__cause__, EngineTimeoutError)
    assert "total timeout" in interrupted.value.message


def test_the_request_deadline_is_backends_total_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """``server.request_timeout_s`` did nothing and was removed: setting it is an error, not a no-op."""
    assert load_settings().backends.total_timeout_s == 600.0
    monkeypatch.setenv("SOVEREIGN_SERVER__REQUEST_TIMEOUT_S", "5")
    with pytest.raises(ConfigError, match="REQUEST_TIMEOUT_S"):
        load_settings()


# -- the active health probe ------------------------------------------------------------------------


async def test_failing_probe_opens_the_breaker_and_keeps_it_open() -> None:
    clock, healthy = Clock(), [False]

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/health"
        return httpx.Response(200 if healthy[0] else 503, json={"error": {"message": "warming up"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = make("a", client, clock, failures=2, cooldown_s=10)
        assert not await a.probe()
        assert a.breaker.state is BreakerState.CLOSED and a.breaker.consecutive_failures == 1
        assert a.status()["up"] is False and "warming up" in a.status()["last_error"] and engine_up("a") == 0
        assert not await a.probe()
        assert a.breaker.state is BreakerState.OPEN  # probes alone open it at the threshold
        clock.now = 8.0
        assert not await a.probe()  # still failing: the cooldown restarts at t=8
        clock.now = 15.0
        assert a.breaker.state is BreakerState.OPEN and not a.breaker.allow()
        clock.now = 18.0
        assert a.breaker.state is BreakerState.HALF_OPEN


async def test_passing_probe_half_opens_and_the_trial_closes() -> None:
    clock, healthy = Clock(), [False]

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/health":
            return httpx.Response(200 if healthy[0] else 503)
        return ok(req.url.host)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = make("a", client, clock, failures=1, cooldown_s=60)
        router = Router("m", [a], FAST)
        assert not await a.probe()
        assert a.breaker.state is BreakerState.OPEN
        with pytest.raises(EngineUnavailableError, match="circuit breaker open"):
            await collect(router.stream(request()))
        healthy[0] = True
        assert await a.probe()  # long before the cooldown ends: half-open at once
        assert a.breaker.state is BreakerState.HALF_OPEN and engine_up("a") == 1
        assert a.status()["up"] is True and a.status()["latency_ms"] is not None
        assert (await collect(router.stream(request()))).text == "from a"  # the one trial succeeds
        assert a.breaker.state is BreakerState.CLOSED
        a.breaker.record_failure()
        clock.now = 120.0  # after the cooldown: already half-open; a passing probe keeps one trial
        assert await a.probe()
        assert a.breaker.allow() and not a.breaker.allow()


async def test_unreachable_probe_fails_without_raising() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = make("a", client, failures=1)
        assert not await a.probe()
    assert a.breaker.state is BreakerState.OPEN and "unreachable" in a.status()["last_error"]


async def test_probe_loop_survives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    done = asyncio.Event()

    async def probe() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("boom in round one")
        if len(rounds) == 3:
            done.set()

    with caplog.at_level(logging.ERROR, logger="sovereign.routing"):
        task = asyncio.create_task(probe_forever(probe, 0.0))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(rounds) >= 3
    failed = [r for r in caplog.records if "health probe round failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None and "boom" in str(failed[0].exc_info[1])
