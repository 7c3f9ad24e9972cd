"""The remote ``/v1/embeddings`` client against a scripted engine (``httpx.MockTransport``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from sovereign.config import EmbeddingSettings, load_settings
from sovereign.errors import EngineError, InvalidRequestError
from sovereign.rag.embeddings import RemoteEmbedder

pytestmark = pytest.mark.anyio
DIMS = 8


def remote_settings(**extra: object) -> EmbeddingSettings:
    return load_settings(embeddings={"runtime": "remote", "remote_base_url": "http://engine/v1/",
                                     "remote_model": "mini", **extra}).embeddings


def vector_for(text: str) -> list[float]:
    """A distinct, not normalised vector per input ``t<i>``: [i + 1, 1, 0, ...]."""
    return [float(int(text[1:]) + 1), 1.0] + [0.0] * (DIMS - 2)


def engine(requests: list[dict[str, Any]], shuffle: bool = True) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        requests.append({"payload": payload, "auth": request.headers.get("authorization"), "url": str(request.url)})
        data = [{"object": "embedding", "index": i, "embedding": vector_for(t)} for i, t in enumerate(payload["input"])]
        if shuffle:
            data.reverse()  # engines may answer out of order; ``index`` says where each belongs
        return httpx.Response(200, json={"object": "list", "data": data,
                                         "usage": {"prompt_tokens": 3 * len(data), "total_tokens": 3 * len(data)}})

    return handle


async def test_batches_by_batch_size_and_keeps_input_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_EMBED_KEY", "sk-test")
    requests: list[dict[str, Any]] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(engine(requests))) as client:
        embedder = RemoteEmbedder(remote_settings(batch_size=4, remote_api_key_env="REMOTE_EMBED_KEY"), client,
                                  dimensions=DIMS)
        texts = [f"t{i}" for i in range(10)]
        vectors, tokens = await embedder.embed(texts)
    assert [len(r["payload"]["input"]) for r in requests] == [4, 4, 2]
    assert [t for r in requests for t in r["payload"]["input"]] == texts
    assert all(r["payload"]["model"] == "mini" and r["auth"] == "Bearer sk-test" for r in requests)
    assert requests[0]["url"] == "http://engine/v1/embeddings"
    assert vectors.shape == (10, DIMS) and vectors.dtype == np.float32 and tokens == 30
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    expected = np.asarray([vector_for(t) for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)  # row i is text i, whatever order came back


async def test_no_texts_sends_no_request() -> None:
    requests: list[dict[str, Any]] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(engine(requests))) as client:
        vectors, tokens = await RemoteEmbedder(remote_settings(), client, dimensions=DIMS).embed([])
    assert vectors.shape == (0, DIMS) and tokens == 0 and requests == []


def good_data(n: int = 2) -> list[dict[str, Any]]:
    return [{"index": i, "embedding": [1.0] * DIMS} for i in range(n)]


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, {}, "no 'data' list"),  # bad input: no data
        (200, {"data": "nope"}, "no 'data' list"),  # bad input: data is not a list
        (200, [1, 2], "no 'data' list"),  # bad input: body is not an object
        (200, {"data": good_data(1)}, "1 embeddings for 2 inputs"),  # bad input: too few embeddings
        (200, {"data": good_data(3)}, "3 embeddings for 2 inputs"),  # bad input: too many
        (200, {"data": [{"index": 0, "embedding": [1.0] * DIMS}, {"index": 1}]}, "no 'embedding'"),  # missing
        (200, {"data": [{"index": 0, "embedding": [1.0] * DIMS}, {"index": 0, "embedding": [1.0] * DIMS}]},
         "index 0"),  # bad input: duplicate index
        (200, {"data": [{"index": 0, "embedding": [1.0] * DIMS}, {"index": 7, "embedding": [1.0] * DIMS}]},
         "index 7"),  # bad input: index out of range
        (200, {"data": [{"index": 0, "embedding": [1.0] * DIMS}, {"index": 1, "embedding": [1.0] * 3}]},
         "3 dimensions, expected 8"),  # bad input: wrong vector length
        (200, {"data": [{"index": 0, "embedding": ["a"] * DIMS}, {"index": 1, "embedding": [1.0] * DIMS}]},
         "other than numbers"),  # bad input: not numbers
        (500, {"error": {"message": "boom"}}, "failed"),  # the engine failed
    ],
)
async def test_malformed_or_failed_responses_are_engine_errors(status: int, body: object, why: str) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(status, json=body))) as client:
        with pytest.raises(EngineError, match=why) as info:
            await RemoteEmbedder(remote_settings(), client, dimensions=DIMS).embed(["t0", "t1"])
    assert info.value.status_code == 502


async def test_a_body_that_is_not_json_is_an_engine_error() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(200, text="<html>"))) as c:
        with pytest.raises(EngineError, match="failed"):
            await RemoteEmbedder(remote_settings(), c, dimensions=DIMS).embed(["t0"])


async def test_a_later_batch_failing_fails_the_call() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        n = len(json.loads(request.content)["input"])
        return httpx.Response(200, json={"data": good_data(n if calls == 1 else n - 1)})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(EngineError, match="1 embeddings for 2 inputs"):
            await RemoteEmbedder(remote_settings(batch_size=2), client, dimensions=DIMS).embed(["t0", "t1", "t2", "t3"])
    assert calls == 2


async def test_missing_remote_settings_are_rejected() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _r: httpx.Response(200))) as client:
        with pytest.raises(InvalidRequestError, match="remote_base_url"):
            RemoteEmbedder(load_settings().embeddings, client)
