"""The OpenAI Responses API (``POST /v1/responses``) with the real engine, the ``openai`` SDK and the
OpenAI Agents SDK.

The engine is SmolLM2-135M: these tests assert what the gateway and the engine guarantee (shapes,
event order, a forced call valid against its schema, grammar-valid JSON when the answer stops,
token counts), never which words the model writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from sovereign.errors import StreamInterruptedError
from sovereign.server.responses_shape import ResponsesShape
from sovereign.types import GenerationChunk, ToolCallDelta, Usage
from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration]
MODEL = "smollm2-135m-instruct"
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"],
        "additionalProperties": False}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city.",
           "parameters": CITY, "strict": True}
TIME = {"type": "function", "name": "get_time", "description": "Current time in a time zone.", "strict": True,
        "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                       "required": ["zone"], "additionalProperties": False}}
ASK = "What is the weather in Paris right now?"
TEXT_EVENTS = ["response.output_item.added", "response.content_part.added", "response.output_text.done",
               "response.content_part.done", "response.output_item.done"]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[Any]:
    """An ``openai.OpenAI`` client (typed Any: the SDK's typed parameters do not take plain dicts)."""
    with openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=300) as c:
        yield c


def check_finished(response: Any) -> None:
    """``completed``, or ``incomplete`` because the output budget ran out; usage counted."""
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete")
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


def only_call(response: Any) -> Any:
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.status == "completed" and call.id.startswith("fc_") and call.call_id
    return call


def test_text_response(client: Any) -> None:
    response = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=16, temperature=0)
    check_finished(response)
    assert isinstance(response.output_text, str) and response.output_text
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert response.model == MODEL and response.max_output_tokens == 16 and response.tools == []
    assert response.tool_choice == "auto" and response.parallel_tool_calls is True
    if response.status == "incomplete":
        assert response.usage.output_tokens == 16


def test_instructions_become_a_system_message(client: Any) -> None:
    long = "You answer in one short sentence, always politely, and never mention these instructions."
    short = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=4, instructions="Be brief.")
    instructed = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=4, instructions=long)
    check_finished(instructed)
    assert instructed.instructions == long
    assert instructed.usage.input_tokens > short.usage.input_tokens


def prompt_tokens_of_the_question(client: Any) -> int:
    """Input tokens of ASK alone with WEATHER offered (the baseline a longer history exceeds)."""
    response = client.responses.create(model=MODEL, input=ASK, tools=[WEATHER],
                                       max_output_tokens=1)
    return response.usage.input_tokens


def test_input_items_and_multi_part_content(client: Any) -> None:
    response = client.responses.create(model=MODEL, max_output_tokens=8, input=[
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Name a color."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Blue.", "annotations": []}]},
        {"role": "user", "content": "Another one."}])
    check_finished(response)


def test_stream_event_sequence(client: Any) -> None:
    events = list(client.responses.create(model=MODEL, input="Count to five.", max_output_tokens=24, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    body = [k for k in kinds[2:-1] if k != "response.output_text.delta"]
    assert body == TEXT_EVENTS
    assert kinds[4:-4] == ["response.output_text.delta"] * (len(kinds) - 8)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    check_finished(final)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == deltas
    assert events[0].response.status == "in_progress" and events[0].response.id == final.id


def test_stream_helper_collects_the_answer(client: Any) -> None:
    with client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=200, temperature=0) as stream:
        events = list(stream)
        if events[-1].type == "response.completed":  # the helper's final response is a completed one
            assert stream.get_final_response().output_text == "".join(
                e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type in ("response.completed", "response.incomplete")


def test_required_tool_choice_returns_a_valid_call(client: Any) -> None:
    response = client.responses.create(model=MODEL, input=ASK, tools=[WEATHER],
                                       tool_choice="required", max_output_tokens=64, temperature=0)
    assert response.status == "completed"
    call = only_call(response)
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), CITY)
    assert response.output_text == ""


def test_named_tool_choice_picks_that_function(client: Any) -> None:
    response = client.responses.create(model=MODEL, input=ASK, tools=[WEATHER, TIME],
                                       tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=64,
                                       temperature=0)
    call = only_call(response)
    assert call.name == "get_time" and json.loads(call.arguments)["zone"] in ("UTC", "CET")


def test_function_call_round_trip(client: Any) -> None:
    first = client.responses.create(model=MODEL, input=ASK, tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=64, temperature=0)
    call = only_call(first)
    history: list[Any] = [{"role": "user", "content": ASK}, call.model_dump(exclude_none=True),
                          {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}]
    answer = client.responses.create(model=MODEL, input=history, tools=[WEATHER],
                                     max_output_tokens=24)
    check_finished(answer)
    assert answer.usage.input_tokens > prompt_tokens_of_the_question(client)


def test_streamed_function_call_arguments(client: Any) -> None:
    events = list(client.responses.create(model=MODEL, input=ASK, tools=[WEATHER],
                                          tool_choice="required", max_output_tokens=64, temperature=0,
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" not in kinds
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert pieces and "".join(pieces) == done.arguments
    jsonschema.validate(json.loads(done.arguments), CITY)
    final_call = only_call(events[-1].response)
    assert final_call.arguments == done.arguments and final_call.call_id == added.item.call_id


def test_json_schema_text_format(client: Any) -> None:
    schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 16}},
              "required": ["color"], "additionalProperties": False}
    response = client.responses.create(
        model=MODEL, input="Name a color as JSON.", max_output_tokens=48, temperature=0,
        text={"format": {"type": "json_schema", "name": "color", "schema": schema, "strict": True}})
    check_finished(response)
    assert response.text.format.type == "json_schema"
    if response.status == "completed":
        jsonschema.validate(json.loads(response.output_text), schema)


def test_previous_response_id_continues_the_conversation(client: Any) -> None:
    first = client.responses.create(model=MODEL, input=ASK, tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=64, temperature=0)
    call = only_call(first)
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER], max_output_tokens=8,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    check_finished(second)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > prompt_tokens_of_the_question(client)
    unstored = client.responses.create(model=MODEL, input="Hi.", max_output_tokens=2, store=False)
    assert unstored.store is False
    for missing in (unstored.id, "resp_nope"):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model=MODEL, input="Hi.", previous_response_id=missing, max_output_tokens=2)
        assert isinstance(info.value.body, dict) and info.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"tools": [{"type": "web_search"}]}, "tools.0.type", "unsupported_parameter"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name", None),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]}, "input.0.call_id", None),
    ({"max_output_tokens": -1}, "max_output_tokens", None),
    ({"input": 5}, "input", None),
    ({"input": [{"role": "user", "content": 5}]}, "input.0.content", None),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type", "unsupported_parameter"),
    ({"tool_choice": {"type": "web_search_preview"}, "tools": [WEATHER]}, "tool_choice.type",
     "unsupported_parameter"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", None),
    ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
    ({"truncation": "auto"}, "truncation", "unsupported_parameter"),
    ({"include": ["file_search_call.results"]}, "include.0", "unsupported_parameter"),
])
def test_bad_requests_name_the_param(live_server: LiveServer, body: dict[str, Any], param: str,
                                     code: str | None) -> None:
    response = httpx.post(live_server.url + "/v1/responses", json={"model": MODEL, "input": "Hi.", **body},
                          timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code


@pytest.fixture
def weather_tool() -> tuple[Any, list[str]]:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"clear sky in {city}"

    return get_weather, calls


def agent_with(model: Any, tool: Any) -> Agent:
    set_tracing_disabled(True)
    return Agent(name="weather", instructions="Answer with the weather tool.", tools=[tool], model=model,
                 tool_use_behavior="stop_on_first_tool",
                 model_settings=ModelSettings(tool_choice="required", max_tokens=64, temperature=0))


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [False, True])
async def test_agents_sdk_responses_model(live_server: LiveServer, weather_tool: tuple[Any, list[str]],
                                          streamed: bool) -> None:
    tool, calls = weather_tool
    async with openai.AsyncOpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0) as client:
        agent = agent_with(OpenAIResponsesModel(model=MODEL, openai_client=client), tool)
        if streamed:
            run = Runner.run_streamed(agent, ASK)
            async for _ in run.stream_events():
                pass
            final = run.final_output
        else:
            final = (await Runner.run(agent, ASK)).final_output
    (city,) = calls
    assert isinstance(city, str) and final == f"clear sky in {city}"


@pytest.mark.anyio
async def test_agents_sdk_chat_completions_model(live_server: LiveServer,
                                                 weather_tool: tuple[Any, list[str]]) -> None:
    tool, calls = weather_tool
    async with openai.AsyncOpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0) as client:
        result = await Runner.run(agent_with(OpenAIChatCompletionsModel(model=MODEL, openai_client=client), tool), ASK)
    (city,) = calls
    assert isinstance(city, str) and result.final_output == f"clear sky in {city}"


def test_error_after_the_first_byte_is_an_error_event_then_failed() -> None:
    shape = ResponsesShape(model=MODEL)
    usage = Usage(3, 1)
    events = shape.events(GenerationChunk("Hi", usage), first=True)
    events += shape.events(GenerationChunk("", usage, tool_calls=[ToolCallDelta(0, "call_1", "f", '{"a"')]),
                           first=False)
    events.append(shape.error_event(StreamInterruptedError("The engine stopped.")))
    events += shape.closing()
    parsed = [json.loads(line[6:]) for event in events for line in event.decode().split("\n")
              if line.startswith("data: ")]
    assert [p["type"] for p in parsed][-2:] == ["error", "response.failed"]
    assert parsed[-2]["code"] == "engine_stream_interrupted" and parsed[-2]["message"] == "The engine stopped."
    failed = parsed[-1]["response"]
    assert failed["status"] == "failed" and [i["type"] for i in failed["output"]] == ["message", "function_call"]
    assert [p["sequence_number"] for p in parsed] == list(range(len(parsed)))
