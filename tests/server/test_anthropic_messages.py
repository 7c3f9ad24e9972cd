"""The Anthropic Messages API through the gateway, with the real engine and the official ``anthropic`` SDK.

The engine is SmolLM2-135M: these tests assert what the gateway and the engine guarantee (stop
reasons, usage, event order, schema-valid forced tool calls, error classes), never which words the
model writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pydantic
import pytest

from sovereign.config import load_settings
from sovereign.errors import EngineOverloadedError, StreamInterruptedError
from sovereign.server.anthropic_wire import MessagesShape
from sovereign.server.app import build_registry, create_app
from sovereign.types import GenerationChunk, GenerationResult, ToolCall, ToolCallDelta, Usage
from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration]
MODEL = "smollm2-135m-instruct"
WEATHER: Any = {
    "name": "get_weather", "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                     "required": ["city"], "additionalProperties": False},
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris right now?"}]
GREEDY: Any = {"extra_body": {"temperature": 0}}  # this SDK version has no sampling keyword arguments


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=live_server.url, api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def check_weather_input(value: object) -> None:
    """``value`` satisfies WEATHER's input_schema: exactly a string ``city`` of <= 24 characters."""
    assert isinstance(value, dict) and set(value) == {"city"}
    assert isinstance(value["city"], str) and len(value["city"]) <= 24


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_plain_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=16, **GREEDY,
                                     messages=[{"role": "user", "content": "Say hello."}])
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.content and all(block.type == "text" for block in message.content)
    assert message.usage.output_tokens <= 16


def test_max_tokens_ends_with_max_tokens(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=1, messages=[
        {"role": "user", "content": "Write a long story about a dragon."}])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 1


def test_system_prompt_as_string_and_blocks_counts(client: anthropic.Anthropic) -> None:
    bare = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, messages=ASK)
    system = "You are a terse weather assistant. Answer in one word."
    as_text = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, system=system, messages=ASK)
    as_blocks = client.messages.create(model=MODEL, max_tokens=4, **GREEDY, messages=ASK,
                                       system=[{"type": "text", "text": system,
                                                "cache_control": {"type": "ephemeral"}}])
    def prompt(message: anthropic.types.Message) -> int:  # input_tokens excludes the engine's cache reads
        return message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)

    assert prompt(as_text) != prompt(bare)  # the template's default system prompt is replaced
    assert prompt(as_blocks) == prompt(as_text) > 0


def test_multi_turn_and_sampling_fields(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=8, stop_sequences=["\n\n"],
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 20},
        metadata={"user_id": "user-42"},
        messages=[{"role": "user", "content": "My name is Ada."},
                  {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada!"}]},
                  {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]}])
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 10


def test_streaming_events_and_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=16, **GREEDY,
                                messages=[{"role": "user", "content": "Count to five."}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events if not e.type.startswith(("text", "input_json"))]  # SDK helper events
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) <= {"content_block_delta"}
    deltas = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text_of(final) == deltas
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_stream_matches_raw_sse_format(live_server: LiveServer) -> None:
    body = {"model": MODEL, "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", live_server.url + "/v1/messages", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [chunk for chunk in raw.split("\n\n") if chunk.strip()]
    for event in events:
        name_line, data_line = event.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        assert json.loads(data_line[6:])["type"] == name_line[7:]
    assert events[-1].startswith("event: message_stop")


def test_forced_tool_use_is_schema_valid(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=64, **GREEDY, messages=ASK, tools=[WEATHER],
                                     tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.id
    check_weather_input(block.input)


def test_named_tool_choice(client: anthropic.Anthropic) -> None:
    zone: Any = {"name": "get_time", "description": "Current time in a time zone.",
                 "input_schema": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                                  "required": ["zone"], "additionalProperties": False}}
    message = client.messages.create(model=MODEL, max_tokens=64, **GREEDY, messages=ASK,
                                     tools=[WEATHER, zone], tool_choice={"type": "tool", "name": "get_time"})
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert block.name == "get_time" and block.input in ({"zone": "UTC"}, {"zone": "CET"})


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model=MODEL, max_tokens=64, **GREEDY, messages=ASK, tools=[WEATHER],
                                   tool_choice={"type": "any"})
    (call,) = [b for b in first.content if b.type == "tool_use"]
    history: Any = [*ASK, {"role": "assistant", "content": first.content},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": '{"temperature_c": 21}'},
                        {"type": "text", "text": "Summarise it."}]}]
    answer = client.messages.create(model=MODEL, max_tokens=24, **GREEDY, messages=history, tools=[WEATHER])
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.usage.input_tokens > first.usage.input_tokens
    error_result: Any = [*history[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "is_error": True,
         "content": [{"type": "text", "text": "city not found"}]}]}]
    again = client.messages.create(model=MODEL, max_tokens=8, messages=error_result, tools=[WEATHER],
                                   tool_choice={"type": "none"})
    assert all(block.type == "text" for block in again.content)


def test_streamed_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, **GREEDY, messages=ASK, tools=[WEATHER],
                                tool_choice={"type": "any"}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    (start,) = [b for b in starts if isinstance(b, anthropic.types.ToolUseBlock)]
    assert start.name == "get_weather"
    pieces = [e.delta.partial_json for e in events
              if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len(pieces) >= 1
    check_weather_input(json.loads("".join(pieces)))
    assert final.stop_reason == "tool_use"
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert block.input == json.loads("".join(pieces)) and block.id == start.id


def test_count_tokens_grows_with_the_prompt(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    longer = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hi " * 40}])
    brief = client.messages.count_tokens(model=MODEL, system="Be brief.",
                                         messages=[{"role": "user", "content": "Hi"}])
    with_system = client.messages.count_tokens(model=MODEL, system="Be brief. " * 20,
                                               messages=[{"role": "user", "content": "Hi"}])
    with_tools = client.messages.count_tokens(model=MODEL, tools=[WEATHER],
                                              messages=[{"role": "user", "content": "Hi"}])
    assert 0 < short.input_tokens < longer.input_tokens
    assert with_system.input_tokens > brief.input_tokens > 0
    assert with_tools.input_tokens >= short.input_tokens  # as the model's template renders tools (SmolLM2: not)
    used = client.messages.create(model=MODEL, max_tokens=1, system="Be brief.",
                                  messages=[{"role": "user", "content": "Hi"}]).usage
    assert used.input_tokens + (used.cache_read_input_tokens or 0) == brief.input_tokens


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("missing max_tokens", {"messages": ASK}, "max_tokens"),
    ("negative max_tokens", {"messages": ASK, "max_tokens": -5}, "max_tokens"),
    ("empty messages", {"messages": [], "max_tokens": 8}, "messages"),
    ("wrong role", {"messages": [{"role": "system", "content": "hi"}], "max_tokens": 8}, "role"),
    ("unknown tool in tool_choice", {"messages": ASK, "max_tokens": 8, "tools": [WEATHER],
                                     "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
    ("tool_result without tool_use", {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]}], "max_tokens": 8}, "tool_use_id"),
    ("temperature above 1", {"messages": ASK, "max_tokens": 8, "temperature": 1.5}, "temperature"),
    ("extended thinking", {"messages": ASK, "max_tokens": 8,
                           "thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_are_400_with_the_anthropic_envelope(
    client: anthropic.Anthropic, live_server: LiveServer, case: str, fields: dict[str, Any], field: str
) -> None:
    body = {"model": MODEL, **fields}
    response = httpx.post(live_server.url + "/v1/messages", json=body, timeout=60)
    assert response.status_code == 400, case
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.post("/v1/messages", body=body, cast_to=httpx.Response)


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=8, messages=ASK)
    assert caught.value.status_code == 404
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=ASK)


def test_malformed_json_is_400(live_server: LiveServer) -> None:
    response = httpx.post(live_server.url + "/v1/messages", content=b"{not json",
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.anyio
async def test_auth_and_engine_errors_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys configured, engine not started (no lifespan): 401 for a wrong ``x-api-key``, a right key
    reaches validation (400) and generation (503, the engine is not loaded), all in Anthropic's envelope."""
    monkeypatch.setenv("TEST_KEYS", "user-key")
    settings = load_settings(server={"api_keys_env": "TEST_KEYS"})
    app = create_app(settings, build_registry(settings, embedding=False))
    transport = httpx2.ASGITransport(app=app)

    def sdk(key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url="http://test", api_key=key, max_retries=0,
                                        http_client=httpx2.AsyncClient(transport=transport, base_url="http://test"))

    with pytest.raises(anthropic.AuthenticationError) as caught:
        await sdk("wrong").messages.create(model=MODEL, max_tokens=8, messages=ASK)
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        await sdk("wrong").messages.count_tokens(model=MODEL, messages=ASK)
    with pytest.raises(anthropic.BadRequestError):
        await sdk("user-key").messages.create(model=MODEL, max_tokens=8, messages=[])
    with pytest.raises(anthropic.ServiceUnavailableError) as unavailable:
        await sdk("user-key").messages.create(model=MODEL, max_tokens=8, messages=ASK)
    assert isinstance(unavailable.value.body, dict) and unavailable.value.body["error"]["type"] == "api_error"


def parse_events(raw: list[bytes]) -> list[Any]:
    """SSE bytes as the SDK's event models (validated: a shape the SDK cannot read fails here)."""
    adapter: Any = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    out = []
    for event in raw:
        name, data = event.decode().strip().split("\n")
        out.append(adapter.validate_python(json.loads(data.removeprefix("data: "))))
        assert name == f"event: {out[-1].type}"
    return out


def test_shape_text_then_two_tool_calls() -> None:
    """No engine: text, then two calls whose arguments arrive in pieces, as separate content blocks."""
    shape = MessagesShape(model=MODEL, extra={"sovereign": {"route": {"deployment": "a"}}})
    chunks = [
        GenerationChunk("Let me check.", Usage(20, 3)),
        GenerationChunk("", Usage(20, 4), tool_calls=[ToolCallDelta(0, id="call_a", name="get_weather")]),
        GenerationChunk("", Usage(20, 5), tool_calls=[ToolCallDelta(0, arguments='{"city": ')]),
        GenerationChunk("", Usage(20, 6), tool_calls=[ToolCallDelta(0, arguments='"Paris"}'),
                                                      ToolCallDelta(1, id="call_b", name="get_weather",
                                                                    arguments='{"city": "Rome"}')]),
        GenerationChunk("", Usage(20, 9, cached_tokens=5), finish_reason="tool_calls"),
    ]
    raw = [event for i, chunk in enumerate(chunks) for event in shape.events(chunk, first=i == 0)]
    events = parse_events(raw + shape.closing())
    assert [e.type for e in events] == [
        "message_start", "content_block_start", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    starts = [e for e in events if e.type == "content_block_start"]
    assert [(e.index, e.content_block.type) for e in starts] == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    assert [e.content_block.id for e in starts[1:]] == ["call_a", "call_b"]
    delta = events[-2]
    assert delta.delta.stop_reason == "tool_use" and delta.usage.output_tokens == 9
    assert delta.usage.input_tokens == 15 and delta.usage.cache_read_input_tokens == 5
    assert json.loads(raw[-1].decode().split("data: ")[1])["sovereign"]["route"]["deployment"] == "a"


def test_shape_body_and_errors() -> None:
    shape = MessagesShape(model=MODEL)
    result = GenerationResult("", "tool_calls", Usage(12, 7), tool_calls=[
        ToolCall("call_x", "get_weather", '{"city": "Oslo"}'), ToolCall("call_y", "get_weather", "not json")])
    message = anthropic.types.Message.model_validate(shape.body(result))
    assert message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("tool_use", {"city": "Oslo"}), ("tool_use", {})]
    empty = anthropic.types.Message.model_validate(shape.body(GenerationResult("", "length", Usage(3, 1))))
    assert empty.stop_reason == "max_tokens" and [b.type for b in empty.content] == ["text"]
    streaming = MessagesShape(model=MODEL)
    started = streaming.events(GenerationChunk("Hi", Usage(3, 1)), first=True)
    error = streaming.error_event(StreamInterruptedError("engine died", "a"))
    assert error.startswith(b"event: error\n")
    assert json.loads(error.decode().split("data: ")[1]) == {
        "type": "error", "error": {"type": "api_error", "message": "engine died"}}
    assert streaming.closing() == [] and len(parse_events(started)) == 3
    overloaded = json.loads(streaming.error_event(EngineOverloadedError("busy")).decode().split("data: ")[1])
    assert overloaded["error"]["type"] == "overloaded_error"
