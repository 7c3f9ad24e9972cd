"""The official ``openai`` SDK against a live ``sovereign serve`` process (real model, real HTTP)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import LiveServer

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as sdk:
        yield sdk


def test_models_lists_chat_and_embedding_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and "all-minilm-l6-v2" in ids
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_completion_json(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20, temperature=0,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None
    assert response.usage.prompt_tokens > 5
    assert 1 <= response.usage.completion_tokens <= 20
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_stream_matches_json_and_reports_usage(client: openai.OpenAI) -> None:
    kwargs = dict(
        model=MODEL, messages=[{"role": "user", "content": "Name three colors."}], max_tokens=24, temperature=0
    )
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    assert "x-sovereign-cache" not in raw.headers  # the engine answered (cache off on this server)
    whole = raw.parse().choices[0].message.content
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == whole
    assert finish in {"stop", "length"}
    assert usage is not None and usage.completion_tokens >= 1


def test_stream_raw_sse_ends_with_done(live_server: LiveServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True,
            "stream_options": {"continuous_usage_stats": True}, "ignore_eos": True}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert all("usage" in p for p in payloads)  # continuous_usage_stats
    assert payloads[-1]["usage"]["completion_tokens"] == 5  # ignore_eos: exactly max_tokens


def test_completions_json_and_stream(client: openai.OpenAI) -> None:
    response = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert response.choices[0].text
    assert response.usage and response.usage.completion_tokens >= 1
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(
            model=MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True) if c.choices
    )
    assert streamed == response.choices[0].text


def test_sampling_fields_reach_the_engine(client: openai.OpenAI) -> None:
    hi = [{"role": "user", "content": "Write a sentence about the sea."}]
    capped = client.chat.completions.create(model=MODEL, messages=hi, max_completion_tokens=3, temperature=0,
                                            extra_body={"ignore_eos": True})
    assert capped.usage is not None and capped.usage.completion_tokens == 3
    assert capped.choices[0].finish_reason == "length"
    whole = client.chat.completions.create(model=MODEL, messages=hi, max_tokens=16, temperature=0)
    text = whole.choices[0].message.content or ""
    words = text.split()
    assert len(words) >= 3, text
    stop = " " + words[2]
    stopped = client.chat.completions.create(model=MODEL, messages=hi, max_tokens=16, temperature=0, stop=[stop])
    assert stopped.choices[0].message.content == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    seeded = [client.chat.completions.create(model=MODEL, messages=hi, max_tokens=12, temperature=1.0, top_p=0.9,
                                             seed=1234).choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]  # same seed, same sample


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["one", "two"]}, "prompt"),  # bad input: two prompts in one request
        ({"prompt": "x", "echo": True}, "echo"),  # bad input: echo is not supported
        ({}, "prompt"),  # bad input: no prompt
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),  # bad input: no room to answer
        ({"prompt": "x", "n": 0}, "n"),  # bad input: no choice asked for
    ],
)
def test_bad_completion_requests(live_server: LiveServer, body: dict, param: str) -> None:
    response = httpx.post(live_server.url + "/v1/completions", json={"model": MODEL, **body}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert param in (error["param"] or "", error["code"] or "")


def test_json_mode(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a cat as JSON with keys name and age."}],
        response_format={"type": "json_object"}, max_tokens=60, temperature=0,
    )
    content = response.choices[0].message.content or ""
    # what the grammar guarantees, whatever this CPU's kernels made the model say: a stop means
    # complete JSON; a cut at max_tokens is a length stop with exactly max_tokens tokens
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert response.choices[0].finish_reason == "length" and response.usage is not None
        assert response.usage.completion_tokens == 60
    assert content.lstrip().startswith("{")


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    single = client.embeddings.create(model="all-minilm-l6-v2", input="a cat sits on the mat")
    vector = np.array(single.data[0].embedding)
    assert vector.shape == (384,)
    assert abs(np.linalg.norm(vector) - 1.0) < 1e-3
    many = client.embeddings.create(
        model="all-minilm-l6-v2", input=["a cat sits on the mat", "a kitten rests on a rug", "stock market crash"],
    )
    v = np.array([d.embedding for d in many.data])
    assert np.allclose(v[0], vector, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # paraphrase closer than unrelated text
    raw = httpx.post(
        str(client.base_url) + "embeddings",
        json={"model": "all-minilm-l6-v2", "input": "a cat sits on the mat", "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vector, atol=1e-6)
    assert raw["usage"]["prompt_tokens"] > 0


# -- bad input: every case returns the OpenAI envelope, never a 500 --------------------------------

@pytest.mark.parametrize(
    ("body", "status", "param_or_code"),
    [
        ({"model": MODEL, "messages": []}, 400, "messages"),                          # empty messages
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),  # unknown role
        ({"model": MODEL, "messages": "hello"}, 400, "messages"),                      # wrong type
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}, 400, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**7}, 400, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5000}, 400,
         "context_length_exceeded"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 17}, 400, "n"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "temperature"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}, 400,
         "tool_choice"),
        ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
        ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),             # missing model
    ],
)
def test_bad_chat_requests_get_openai_envelope(
    live_server: LiveServer, body: dict, status: int, param_or_code: str
) -> None:
    response = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert param_or_code in (error["param"] or "", error["code"] or "")


def test_malformed_json_and_oversized_body(live_server: LiveServer) -> None:
    bad = httpx.post(live_server.url + "/v1/chat/completions", content=b"{not json",
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    huge = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 100_000}]}  # limit is 64 KiB here
    too_big = httpx.post(live_server.url + "/v1/chat/completions", json=huge)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_too_large"
    # the same body chunked (no Content-Length): the limit applies to the bytes received
    payload = json.dumps(huge).encode()
    chunked = httpx.post(live_server.url + "/v1/chat/completions", headers={"content-type": "application/json"},
                         content=(payload[i : i + 8192] for i in range(0, len(payload), 8192)))
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413, chunked.text
    assert chunked.json()["error"]["code"] == "request_too_large"


def test_bad_embedding_requests(live_server: LiveServer) -> None:
    url = live_server.url + "/v1/embeddings"
    for body, code in [
        ({"model": "all-minilm-l6-v2", "input": ""}, 400),
        ({"model": "all-minilm-l6-v2", "input": []}, 400),
        ({"model": "all-minilm-l6-v2", "input": [[1, 2, 3]]}, 400),
        ({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 128}, 400),
        ({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "int8"}, 400),
        ({"model": "nope", "input": "x"}, 404),
    ]:
        response = httpx.post(url, json=body)
        assert response.status_code == code, (body, response.text)
        assert response.json()["error"]["message"]


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4000)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        # bad input: more choices than allowed
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=17)


# -- concurrency and disconnects -----------------------------------------------------------------

def test_eight_concurrent_streams_all_complete(client: openai.OpenAI) -> None:
    prompts = [f"Repeat the word apple {i} times." for i in range(8)]
    expected = {
        p: client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}],
                                          max_tokens=12, temperature=0).choices[0].message.content
        for p in prompts
    }
    results: dict[str, str] = {}

    def run(prompt: str) -> None:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=12, temperature=0, stream=True
        )
        results[prompt] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == expected  # every stream completed with the same text as its JSON twin


def test_disconnect_mid_stream_frees_the_engine(live_server: LiveServer, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long essay."}],
            "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        for i, _line in enumerate(response.iter_lines()):
            if i > 5:
                break  # leave after a few tokens: the connection closes here
    started = time.monotonic()
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert answer.choices[0].message.content is not None
    # 1500 tokens would keep the engine busy for many seconds; the next request is served at once
    assert time.monotonic() - started < 5.0


def test_metrics_exposes_request_ttft_and_token_counters(live_server: LiveServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    text = httpx.get(live_server.url + "/metrics").text
    for family in (
        'sovereign_requests_total{model="smollm2-135m-instruct",route="/v1/chat/completions",status="200"}',
        "sovereign_request_duration_seconds_bucket",
        'sovereign_time_to_first_token_seconds_count{model="smollm2-135m-instruct"}',
        'sovereign_prompt_tokens_total{model="smollm2-135m-instruct"}',
        'sovereign_completion_tokens_total{model="smollm2-135m-instruct"}',
    ):
        assert family in text, family


def test_health_and_readiness(live_server: LiveServer) -> None:
    assert httpx.get(live_server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(live_server.url + "/health").json() == {"status": "ok"}  # the path engines and guidellm use
    assert httpx.get(live_server.url + "/readyz").json() == {"status": "ready"}
    unknown = httpx.get(live_server.url + "/v1/nothing-here")
    assert unknown.status_code == 404 and "error" in unknown.json()
