"""``/tokenize`` and ``/detokenize`` through the gateway, answered by the managed engine's tokenizer."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration]


def test_round_trip_in_both_spellings(live_server: LiveServer) -> None:
    llama = httpx.post(live_server.url + "/tokenize", json={"content": "Hello world"}).json()
    vllm = httpx.post(live_server.url + "/tokenize", json={"model": "smollm2-135m-instruct", "prompt": "Hello world"})
    assert vllm.json()["tokens"] == llama["tokens"] and llama["count"] == len(llama["tokens"]) >= 2
    assert llama["max_model_len"] == 2048
    back = httpx.post(live_server.url + "/detokenize", json={"tokens": llama["tokens"]})
    assert back.json() == {"content": "Hello world"}
    special = httpx.post(live_server.url + "/tokenize", json={"content": "Hi", "add_special": True}).json()
    assert special["count"] >= httpx.post(live_server.url + "/tokenize", json={"content": "Hi"}).json()["count"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [  # bad input: each a 4xx envelope, never the engine's 500
        ("/detokenize", {"tokens": [999_999_999]}, 400, "tokens"),  # outside the vocabulary
        ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
        ("/tokenize", {"content": "a", "prompt": "b"}, 400, None),  # two texts
        ("/tokenize", {"model": "sovereign-rag", "content": "a"}, 400, "tokenize"),  # a pipeline has no tokenizer
        ("/tokenize", {"model": "nope", "content": "a"}, 404, "model"),
    ],
)
def test_bad_tokenizer_requests(live_server: LiveServer, path: str, body: dict, status: int, param: str | None) -> None:
    r = httpx.post(live_server.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    if param is not None:
        assert r.json()["error"]["param"] == param


def test_rerank_puts_the_relevant_document_first(live_server: LiveServer) -> None:
    docs = ["Paris is the capital of France.", "Bananas are rich in potassium.", {"text": "The stock market fell."}]
    r = httpx.post(live_server.url + "/v1/rerank", json={"model": "all-minilm-l6-v2", "query": "capital of France",
                                                          "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results][:1] == [0] and len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"] == {"text": docs[0]} and r.json()["usage"]["total_tokens"] > 0
    for bad in ({"query": "x", "documents": []}, {"query": "", "documents": ["a"]}, {"query": "x", "documents": ["a"],
                                                                                        "top_n": 0}):
        assert httpx.post(live_server.url + "/v1/rerank", json=bad).status_code == 400, bad  # bad input
