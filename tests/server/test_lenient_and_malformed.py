"""Lenient parsing (unknown fields kept aside, null = default) and malformed input that used to be a 500.

Against the live gateway (real engine) where the request reaches it, and in-process for the strict
setting. Each malformed case names what was tried.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from sovereign.backends.registry import ModelRegistry
from sovereign.config import load_settings
from sovereign.server.app import create_app
from tests.conftest import LiveServer

pytestmark = pytest.mark.anyio
MODEL = "smollm2-135m-instruct"
CHAT = {"model": MODEL, "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.integration
def test_unknown_fields_are_reported_not_refused(live_server: LiveServer) -> None:
    body = {**CHAT, "bogus_field": 1, "reasoning_effort": "low", "top_k": 40, "min_p": 0.05,
            "messages": [{"role": "user", "content": "Hi", "cache_control": {"type": "ephemeral"}}]}
    r = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-sovereign-ignored-fields"] == "bogus_field, reasoning_effort, messages.0.cache_control"


@pytest.mark.integration
def test_null_means_default_and_more_than_four_stops(live_server: LiveServer) -> None:
    body = {**CHAT, "temperature": None, "top_p": None, "stream": None, "stop": ["a", "b", "c", "d", "e", "f"]}
    r = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert "x-sovereign-ignored-fields" not in r.headers


def raw_post(url: str, body: str) -> httpx.Response:
    """POST ``body`` as written (a lone surrogate escape cannot be produced by json.dumps + UTF-8)."""
    return httpx.post(url, content=body.encode(), headers={"content-type": "application/json"}, timeout=60)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [  # bad input: a lone UTF-16 surrogate escape ("\ud800") in each text field that used to give 500
        ("/v1/chat/completions",
         '{"model": "' + MODEL + '", "max_tokens": 2, "messages": [{"role": "user", "content": "a\\ud800b"}]}', "body"),
        ("/v1/embeddings", '{"model": "all-minilm-l6-v2", "input": ["ok", "\\udfff"]}', "body"),
        ("/v1/search", '{"query": "x\\ud800"}', "body"),
        ("/v1/completions", '{"model": "' + MODEL + '", "max_tokens": 2, "prompt": "\\ud83d"}', "body"),
    ],
)
def test_lone_surrogates_are_400(live_server: LiveServer, path: str, body: str, param: str) -> None:
    r = raw_post(live_server.url + path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "surrogate" in error["message"]


@pytest.mark.integration
def test_an_integer_beyond_64_bits_is_400_not_500(live_server: LiveServer) -> None:
    """Bad input (found by schemathesis): a tool schema holding 2**70. JSON allows it; the engine call
    (orjson) cannot carry it, so it answered 500 before the check."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "maximum": 2**70}}}]
    r = httpx.post(live_server.url + "/v1/chat/completions", timeout=60, json={
        "model": MODEL, "max_tokens": 2, "tools": tools, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    assert "does not fit in 64 bits" in r.json()["error"]["message"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "param"),
    [  # bad input on POST /v1/documents that used to give 500
        ({"files": [{"filename": "a\x00b.md", "content_base64": "aGk="}]}, "files.0.filename"),  # NUL in a name
        ({"files": [{"filename": "x" * 255, "content_base64": "aGk="}]}, "files.0.filename"),  # too long to store
        ({"path": "~nosuchuser/x"}, "path"),  # no such home directory
        ({"path": "/tmp/a\x00b"}, "path"),  # NUL in a path
    ],
)
def test_bad_document_names_and_paths_are_400(live_server: LiveServer, body: dict[str, object], param: str) -> None:
    r = httpx.post(live_server.url + "/v1/documents", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_strict_requests_restore_the_400(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, server={"strict_requests": True}), ModelRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as http:
        r = await http.post("/v1/chat/completions", json={**CHAT, "bogus_field": 1})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "bogus_field" and "strict_requests" in r.json()["error"]["message"]


@pytest.mark.integration
def test_models_report_window_and_capabilities(live_server: LiveServer) -> None:
    rows = {m["id"]: m for m in httpx.get(live_server.url + "/v1/models").json()["data"]}
    engine = rows[MODEL]
    assert engine["context_window"] == 2048
    assert engine["capabilities"]["tools"] and engine["capabilities"]["json_schema"]
    assert not engine["capabilities"]["vision"]
    assert "capabilities" not in rows["all-minilm-l6-v2"]
    assert json.dumps(rows)  # plain JSON
