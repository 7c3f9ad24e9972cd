"""Every engine profile in ``openai_compat.PROFILES``, table-driven against an httpx.MockTransport:
the tokenize request (path, body) and answer parsing, the health path, the model id sent, and the
Authorization header taken from ``api_key_env``; plus the per-engine table in docs/engines.md; plus
the SSE wire details (multi-line ``data``, CRLF, comments, ``event:`` fields) and stream errors."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovereign.backends.base import collect
from sovereign.backends.context_fit import estimate_tokens
from sovereign.backends.openai_compat import PROFILES, OpenAICompatBackend
from sovereign.config import DeploymentSettings
from sovereign.errors import EngineError, EngineOverloadedError, EngineUnavailableError, InvalidRequestError
from tests.backends.test_router import request, sse

pytestmark = pytest.mark.anyio
TEXT = "hello big world"
ESTIMATE = estimate_tokens(TEXT)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "engines.md"


@dataclass(frozen=True)
class Case:
    """What one engine kind must do: the literal wire shapes, written out (not read from PROFILES)."""

    health_path: str
    tokenize_path: str | None = None
    tokenize_body: dict[str, Any] | None = None
    tokenize_answer: Any = None
    tokens: int = ESTIMATE
    stream_usage: bool = True


CASES: dict[str, Case] = {
    "vllm": Case(
        "/health", "/tokenize", {"model": "served-x", "prompt": TEXT, "add_special_tokens": False},
        {"count": 3, "max_model_len": 4096, "tokens": [1, 2, 3]}, 3,
    ),
    "sglang": Case(
        "/health", "/tokenize", {"model": "served-x", "prompt": TEXT, "add_special_tokens": False}, {"count": 4}, 4
    ),
    "llamacpp-server": Case(
        "/health", "/tokenize", {"content": TEXT, "add_special": False}, {"tokens": [10, 11, 12, 13, 14]}, 5
    ),
    "llama-cpp-python": Case(
        "/v1/models", "/extras/tokenize/count", {"input": TEXT, "model": "served-x"}, {"count": 6}, 6,
        stream_usage=False,
    ),
    "ollama": Case("/api/version"),
    "tgi": Case(
        "/health", "/tokenize", {"inputs": TEXT, "add_special_tokens": False},
        [{"id": 1, "text": "hello", "start": 0, "stop": 5}, {"id": 2, "text": " big", "start": 5, "stop": 9}], 2,
    ),
    "triton": Case("/health/ready"),
    "openai": Case("/v1/models"),
}


def test_every_profile_has_a_case() -> None:
    assert set(CASES) == set(PROFILES)


class Recorder:
    """Answers health, tokenize and chat calls; keeps every request."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.requests: list[httpx.Request] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        if req.url.path == self.case.tokenize_path:
            return httpx.Response(200, json=self.case.tokenize_answer)
        if req.url.path == "/v1/chat/completions":
            return httpx.Response(200, content=sse("ok"), headers={"content-type": "text/event-stream"})
        if req.url.path == self.case.health_path:
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": {"message": f"no route {req.url.path}"}})


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_profile_wire_shapes_and_api_key(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[kind]
    monkeypatch.setenv("ENGINE_TEST_KEY", f"sekret-{kind}")
    settings = DeploymentSettings(
        name="d", model="public", engine=kind, base_url="http://engine.test:8000/v1/",
        served_model="served-x", api_key_env="ENGINE_TEST_KEY",
    )
    recorder = Recorder(case)
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        backend = OpenAICompatBackend(settings, client)
        assert await backend.count_text_tokens(TEXT) == case.tokens
        assert await backend.count_text_tokens(TEXT) == case.tokens  # memoised: no second call
        await backend.health()
        result = await collect(backend.stream(request()))
    assert result.text == "ok"
    urls = [str(r.url) for r in recorder.requests]
    expected = [f"http://engine.test:8000{case.tokenize_path}"] if case.tokenize_path else []
    expected += [f"http://engine.test:8000{case.health_path}", "http://engine.test:8000/v1/chat/completions"]
    assert urls == expected
    if case.tokenize_path:
        assert json.loads(recorder.requests[0].content) == case.tokenize_body
    chat = json.loads(recorder.requests[-1].content)
    assert chat["model"] == "served-x" and chat["stream"] is True
    assert ("stream_options" in chat) is case.stream_usage
    assert {r.headers.get("authorization") for r in recorder.requests} == {f"Bearer sekret-{kind}"}


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_profile_without_key_or_served_model(kind: str) -> None:
    """No ``api_key_env`` value: no Authorization header; no ``served_model``: the public name is sent."""
    settings = DeploymentSettings(
        name="d", model="public", engine=kind, base_url="http://engine.test/v1", api_key_env="UNSET_TEST_KEY"
    )
    recorder = Recorder(CASES[kind])
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        await collect(OpenAICompatBackend(settings, client).stream(request()))
    assert json.loads(recorder.requests[-1].content)["model"] == "public"
    assert "authorization" not in recorder.requests[-1].headers


async def test_missing_tokenize_endpoint_switches_to_the_estimate() -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.path)
        return httpx.Response(404, json={"detail": "Not Found"})

    settings = DeploymentSettings(name="d", model="m", engine="sglang", base_url="http://e/v1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        backend = OpenAICompatBackend(settings, client)
        assert await backend.count_text_tokens(TEXT) == ESTIMATE
        assert await backend.count_text_tokens("other text") == estimate_tokens("other text")
    assert calls == ["/tokenize"]  # asked once, then estimated


@pytest.mark.parametrize(
    ("kind", "setting", "expected"),
    [("llama-cpp-python", None, True), ("vllm", None, False), ("llama-cpp-python", False, False), ("vllm", True, True)],
)
async def test_json_upstream_defaults_per_engine(kind: str, setting: bool | None, expected: bool) -> None:
    """Unset ``json_upstream`` follows the engine profile (on for llama-cpp-python); a setting wins.
    Streaming client requests always stream upstream."""
    settings = DeploymentSettings(name="d", model="m", engine=kind, base_url="http://e/v1", json_upstream=setting)
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
        backend = OpenAICompatBackend(settings, client)
        assert backend.whole_answer(replace(request(), buffered=True)) is expected
        assert backend.request_body(replace(request(), buffered=True))["stream"] is not expected
        assert backend.whole_answer(request()) is False


async def test_a_peer_vanishing_while_connecting_is_unavailable_not_a_500() -> None:
    """anyio raised ``'NoneType' object has no attribute 'getpeername'`` when a killed engine's socket
    closed during connection set-up (a 500 in the SIGKILL test); any other AttributeError stays a bug."""
    settings = DeploymentSettings(name="d", model="m", engine="vllm", base_url="http://e/v1")
    for message, expected in (("'NoneType' object has no attribute 'getpeername'", EngineUnavailableError),
                              ("'Foo' object has no attribute 'bar'", AttributeError)):
        def vanish(_request: httpx.Request, message: str = message) -> httpx.Response:
            raise AttributeError(message)

        async with httpx.AsyncClient(transport=httpx.MockTransport(vanish)) as client:
            with pytest.raises(expected):
                await collect(OpenAICompatBackend(settings, client).stream(request()))


def _docs_rows() -> dict[str, str]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        found = re.match(r"\| [^|]*\(`([a-z.-]+)`\) \|", line)
        if found:
            rows[found.group(1)] = line
    return rows


@pytest.mark.parametrize("kind", sorted(CASES))
def test_docs_engine_table_matches_the_profile(kind: str) -> None:
    row = _docs_rows()[kind]
    case = CASES[kind]
    assert f"`GET {case.health_path}`" in row
    if case.tokenize_path:
        assert f"`POST {case.tokenize_path}`" in row
    else:
        assert "none: estimate" in row
    naming = row.split("|")[2]
    if kind == "tgi":  # TGI ignores the field, but what Sovereign sends is served_model, else model
        assert "`served_model`" in naming and "send `tgi`" not in naming


# -- SSE wire details and stream errors -------------------------------------------------------------


class Upstream(httpx.AsyncByteStream):
    """A streamed upstream answer, sent in the given pieces (so line endings can straddle reads);
    records whether the client closed it."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self.sent = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.sent += 1
            yield piece

    async def aclose(self) -> None:
        self.closed = True


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}


USAGE_END = _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}) + b"data: [DONE]\n\n"


async def _stream_from(upstream: Upstream, status: int = 200, content_type: str = "text/event-stream") -> Any:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["accept"] == "text/event-stream"
        return httpx.Response(status, stream=upstream, headers={"content-type": content_type})

    settings = DeploymentSettings(name="d", model="m", engine="openai", base_url="http://e/v1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await collect(OpenAICompatBackend(settings, client).stream(request()))


async def test_sse_data_spanning_two_lines_comments_and_event_fields() -> None:
    """One event's JSON split over two ``data:`` lines (joined with a newline, still valid JSON), a
    ``: keep-alive`` comment, ``event:`` / ``id:`` fields, and an event without data are all fine."""
    split = (b'event: message\nid: 1\ndata: {"choices": [{"index": 0,\n'
             b'data:  "delta": {"content": "Hel"}, "finish_reason": null}]}\n\n')
    upstream = Upstream(
        b": keep-alive\n\n",
        split,
        b"event: ping\n\n",
        b": another comment\n" + _event(_delta("lo")),
        _event(_delta("", "stop")) + USAGE_END,
    )
    result = await _stream_from(upstream)
    assert (result.text, result.finish_reason) == ("Hello", "stop")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (7, 2)


async def test_sse_crlf_line_endings_split_across_reads() -> None:
    """``\r\n`` line endings, with a ``\r`` and its ``\n`` arriving in different reads."""
    body = (b": hi\r\n\r\n" + _event(_delta("Hel")) + _event(_delta("lo", "length")) + USAGE_END)
    body = body.replace(b"\n\n", b"\r\n\r\n")
    cut = body.index(b"\r\n", 10) + 1  # between \r and \n
    result = await _stream_from(Upstream(body[:cut], body[cut:cut + 3], body[cut + 3:]))
    assert (result.text, result.finish_reason) == ("Hello", "length")


@pytest.mark.parametrize(
    ("pieces", "error", "match"),
    [
        ((_event(_delta("Hi")), _event({"error": {"message": "CUDA out of memory"}})), EngineError,
         "failed mid-stream: CUDA out of memory"),
        ((_event(_delta("Hi")), _event({"error": "plain text error"})), EngineError, "plain text error"),
        ((_event(_delta("Hi")), b"data: [DONE]\n\n"), EngineUnavailableError, "without a finish reason"),
        ((_event(_delta("Hi")),), EngineUnavailableError, "without a finish reason"),
        ((b"data: {not json\n\n",), EngineError, "invalid stream event"),
    ],
)
async def test_stream_errors(pieces: tuple[bytes, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        await _stream_from(Upstream(*pieces))


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (429, b'{"error": {"message": "queue full"}}', EngineOverloadedError, "answered 429: queue full"),
        (400, b'{"error": {"message": "bad temperature", "type": "invalid_request_error"}}', InvalidRequestError,
         "bad temperature"),
        (503, b"loading model", EngineUnavailableError, "answered 503: loading model"),
    ],
)
async def test_status_is_translated_before_the_first_byte(status: int, body: bytes, error: type[Exception],
                                                          match: str) -> None:
    with pytest.raises(error, match=match):
        await _stream_from(Upstream(body), status=status, content_type="application/json")


async def test_a_200_that_is_not_an_event_stream_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="text/event-stream"):
        await _stream_from(Upstream(b'{"choices": []}'), content_type="application/json")


async def test_client_disconnect_closes_the_upstream() -> None:
    """A consumer that stops after the first chunk (a client gone) closes the upstream response."""
    upstream = Upstream(_event(_delta("one")), _event(_delta(" two")), _event(_delta("", "stop")), USAGE_END)
    settings = DeploymentSettings(name="d", model="m", engine="openai", base_url="http://e/v1")
    transport = httpx.MockTransport(
        lambda req: httpx.Response(200, stream=upstream, headers={"content-type": "text/event-stream"}))
    async with httpx.AsyncClient(transport=transport) as client:
        stream = OpenAICompatBackend(settings, client).stream(request())
        first = await stream.__anext__()
        assert first.text == "one" and not upstream.closed
        await stream.aclose()  # type: ignore[attr-defined]
        assert upstream.closed and upstream.sent < 4
