"""Tools, structured outputs and logprobs through the gateway with the real engine and the openai SDK.

The engine is SmolLM2-135M: these tests assert what the gateway and the engine guarantee (a forced
call is a call to an allowed function whose arguments satisfy its schema, grammar-valid JSON when
the answer stops, streamed argument pieces, log-probability shapes), never what the model decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration]
MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
                   "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def check_weather_arguments(arguments: str) -> None:
    """The arguments satisfy WEATHER's schema: an object with exactly a string ``city`` of <= 24 chars."""
    value = json.loads(arguments)
    assert set(value) == {"city"} and isinstance(value["city"], str) and len(value["city"]) <= 24


def test_required_tool_choice_returns_a_valid_call(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                              max_tokens=64, temperature=0)  # type: ignore[list-item]
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    check_weather_arguments(call.function.arguments)


def test_named_tool_choice_picks_that_function(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=64, temperature=0,  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = response.choices[0].message.tool_calls or []
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET", "PST")


def test_tool_round_trip_call_then_result_then_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           max_tokens=64, temperature=0)  # type: ignore[list-item]
    call = (first.choices[0].message.tool_calls or [])[0]
    history: list[Any] = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "clear"}'}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=24,
                                            temperature=0)  # type: ignore[list-item]
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_streamed_tool_call_arrives_in_pieces(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                            max_tokens=64, temperature=0, stream=True)  # type: ignore[list-item]
    ids, names, pieces, finish = [], [], [], None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            assert delta.index == 0
            ids += [delta.id] if delta.id else []
            names += [delta.function.name] if delta.function and delta.function.name else []
            pieces.append(delta.function.arguments if delta.function else "")
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "tool_calls" and len(ids) == 1 and names == ["get_weather"]
    assert len([p for p in pieces if p]) >= 1
    check_weather_arguments("".join(pieces))


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    confident: bool


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    try:
        completion = client.chat.completions.parse(model=MODEL, response_format=Verdict, max_tokens=120, temperature=0,
                                                   messages=[{"role": "user", "content": "Is the sky blue? yes or no"}])
    except openai.LengthFinishReasonError:
        return  # the grammar allows whitespace; a 135M model may spend its budget on it (never invalid JSON)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Verdict)


def test_json_schema_output_is_valid_when_it_stops(live_server: LiveServer) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "blue"]},
                                               "count": {"type": "integer"}},
              "required": ["colour", "count"], "additionalProperties": False}
    r = httpx.post(live_server.url + "/v1/chat/completions", timeout=300, json={
        "model": MODEL, "max_tokens": 80, "temperature": 0, "messages": [{"role": "user", "content": "Pick a colour."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}}})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        value = json.loads(choice["message"]["content"])
        assert value["colour"] in ("red", "blue") and isinstance(value["count"], int)
        assert set(value) == {"colour", "count"}
    else:
        assert choice["message"]["content"].lstrip().startswith("{")


def test_logprobs_have_openai_shape(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                              max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    content = (response.choices[0].logprobs or openai.types.chat.chat_completion.ChoiceLogprobs()).content or []
    assert response.usage is not None and len(content) == response.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0.0 and isinstance(item.token, str) and len(item.top_logprobs) == 2


@pytest.mark.parametrize(
    ("body", "param_or_code"),
    [  # bad input for the new fields: each a 400 envelope naming the field
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "42"}]}, "messages.0.tool_call_id"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "not-a-schema"}}},
         "response_format.json_schema.schema"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": "sovereign-rag", "tools": [WEATHER]}, "tools"),  # a pipeline model cannot call tools
    ],
)
def test_bad_tool_and_format_requests(live_server: LiveServer, body: dict[str, Any], param_or_code: str) -> None:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, **body}
    r = httpx.post(live_server.url + "/v1/chat/completions", json=payload, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert param_or_code in (error["param"] or "", error["code"] or ""), error


def test_n_choices_json_and_stream(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}],
                                              max_tokens=3, temperature=0.8, seed=1, n=2)
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage is not None and 2 <= response.usage.completion_tokens <= 6
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}],
                                            max_tokens=3, n=2, stream=True, stream_options={"include_usage": True})
    finished, usage = set(), None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.finish_reason:
                finished.add(choice.index)
        usage = chunk.usage or usage
    assert finished == {0, 1} and usage is not None and usage.completion_tokens <= 6


def test_logit_bias_is_forwarded(live_server: LiveServer) -> None:
    body = {"model": MODEL, "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}],
            "logit_bias": {"2": -100}}
    assert httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
    bad = httpx.post(live_server.url + "/v1/chat/completions", json={**body, "logit_bias": {"x": 1}}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "logit_bias"  # bad input: a non-id key


def test_an_image_to_a_text_only_model_is_400_naming_vision(live_server: LiveServer) -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}]}
    r = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "vision", r.text
    bad = {**body, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}
    r = httpx.post(live_server.url + "/v1/chat/completions", json=bad, timeout=60)  # bad input: not http(s)/data
    assert r.status_code == 400
