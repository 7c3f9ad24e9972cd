"""Property-based: no route answers 500 to any generated body (Hypothesis).

Bodies are arbitrary JSON (surrogate code points included, as JSON escapes), and valid bodies with
one field replaced by arbitrary JSON. The gateway runs in-process with fake engines so thousands of
requests take seconds; the error paths exercised are the gateway's own (parsing, validation,
translation), which are the same with the real engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sovereign.backends.registry import ModelRegistry
from sovereign.config import load_settings
from sovereign.server.app import create_app
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder

MODEL = "smollm2-135m-instruct"
TEXT = st.text(alphabet=st.characters(codec=None, categories=None, exclude_categories=()), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
VALID = {
    "/v1/chat/completions": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": MODEL, "max_tokens": 4, "prompt": "hi"},
    "/v1/embeddings": {"model": "all-minilm-l6-v2", "input": ["hi"]},
    "/v1/search": {"query": "hi"},
    "/v1/documents": {"files": [{"filename": "a.md", "content_base64": "aGk="}]},
    "/v1/messages": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": MODEL, "max_output_tokens": 4, "input": "hi"},
    "/admin/backends/default": {"route": MODEL},
    "/v1/rerank": {"query": "hi", "documents": ["a", "b"]},
    "/tokenize": {"content": "hi"},
    "/detokenize": {"tokens": [1, 2]},
    "/v1/flags/semantic_cache/evaluate": {"user": "u", "attributes": {"header:x-team": "ml"}},
    "/admin/rollouts": {"route": MODEL, "candidate": "c", "steps": [50, 100], "interval_s": 60, "dry_run": True},
    "/admin/rollouts/pause": {"target": f"route:{MODEL}"},
}
FIELDS = sorted({k for body in VALID.values() for k in body} | {
    "tools", "tool_choice", "response_format", "stream", "stop", "logprobs", "top_logprobs", "temperature",
    "stream_options", "system", "instructions", "text", "n", "seed", "top_k", "cache", "path", "collection",
    "logit_bias", "documents", "top_n", "tokens", "content", "input", "min_requests", "max_p95_s", "kind"})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    registry = ModelRegistry()
    registry.add_chat(FakeChatModel("hello there", name=MODEL))
    embedder = FakeEmbedder()
    embedder.name = "all-minilm-l6-v2"  # type: ignore[misc]
    registry.add_embedding(embedder)
    data: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(load_settings(data_dir=data, cache={"enabled": False},
                                   observability={"log_level": "CRITICAL"}), registry)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, path: str, body: Any) -> int:
    content = json.dumps(body).encode()  # ASCII-escaped: lone surrogates travel as \\udXXX
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    if response.status_code == 500:
        pytest.fail(f"500 from {path} for {content[:300]!r}: {response.text[:300]}")
    return response.status_code


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(sorted(VALID)), body=JSON)
def test_arbitrary_json_is_never_a_500(client: TestClient, path: str, body: Any) -> None:
    post(client, path, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(sorted(VALID)), field=st.sampled_from(FIELDS), value=JSON)
def test_a_valid_body_with_one_field_replaced_is_never_a_500(client: TestClient, path: str, field: str,
                                                               value: Any) -> None:
    post(client, path, {**VALID[path], field: value})


def test_the_valid_bodies_are_served(client: TestClient) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert post(client, path, VALID[path]) == 200, path
