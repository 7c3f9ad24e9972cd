"""LangChain's ChatOpenAI against the live gateway: tool binding, structured output, streaming.

Real client (langchain-openai) and real engine (SmolLM2-135M); assertions are what the gateway and
the engine guarantee: a forced call validates, structured output parses when the model stops.
"""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration]
MODEL = "smollm2-135m-instruct"


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"It is sunny in {city}."


def chat(live_server: LiveServer, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(model=MODEL, base_url=live_server.url + "/v1", api_key="unused", temperature=0,  # type: ignore[arg-type]
                      max_retries=0, timeout=300, **kwargs)


def test_bind_tools_agent_loop(live_server: LiveServer) -> None:
    llm = chat(live_server, max_tokens=64).bind_tools([get_weather], tool_choice="get_weather")
    messages: list = [HumanMessage("What is the weather in Oslo?")]
    first = llm.invoke(messages)
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = chat(live_server, max_tokens=16).bind_tools([get_weather]).invoke(messages)
    assert answer.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")


class Pick(BaseModel):
    colour: Literal["red", "blue"] = Field(description="a colour")


def test_with_structured_output_default_method(live_server: LiveServer) -> None:
    structured = chat(live_server, max_tokens=80).with_structured_output(Pick, include_raw=True)
    out = structured.invoke("Pick red or blue.")
    raw = out["raw"]
    if raw.response_metadata["finish_reason"] == "stop":  # grammar-valid JSON when the model stopped
        assert isinstance(out["parsed"], Pick)
    else:
        assert out["parsing_error"] is not None or out["parsed"] is None


def test_streaming_text(live_server: LiveServer) -> None:
    pieces = [c.content for c in chat(live_server, max_tokens=8).stream("Say hi.")]
    assert any(pieces) and all(isinstance(p, str) for p in pieces)
