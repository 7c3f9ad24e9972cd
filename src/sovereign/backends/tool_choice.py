"""``tool_choice: "required"`` or a named function, honoured by the gateway whatever the engine does.

Engines disagree on forced tool calls (llama.cpp's server answered ``required`` in plain text with
SmolLM2; Ollama users report the same, ollama#8421). So Sovereign does not ask for one: it sends
the engine a request without ``tools`` whose output is constrained by a JSON Schema of the call,
``{"name": <one of the allowed functions>, "arguments": <that function's parameters schema>}``
(engines turn the schema into a grammar), with the functions described in a system message, and
turns the JSON answer into an OpenAI tool call. The call's arguments are therefore valid against
the function's schema as far as the engine's schema grammar goes (llama.cpp: types, required
properties, enums, ``const``, string lengths, ``additionalProperties: false``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest, ToolCallDelta

ARGUMENT_PIECE_CHARS = 16  # streamed arguments arrive in pieces, as OpenAI sends them


def forced_tools(request: GenerationRequest) -> list[dict[str, Any]] | None:
    """The functions one of which must be called, or None when the request does not force a call."""
    choice = request.tool_choice
    if not request.tools or choice in (None, "none", "auto"):
        return None
    if choice == "required":
        return list(request.tools)
    name = (choice or {}).get("function", {}).get("name") if isinstance(choice, dict) else None
    return [t for t in request.tools if t.get("function", {}).get("name") == name]


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of one call to any of ``tools``: ``{"name": const, "arguments": parameters}``."""
    options = []
    for tool in tools:
        function = tool.get("function", {})
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        options.append({
            "type": "object",
            "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return options[0] if len(options) == 1 else {"anyOf": options}


def describe(tools: list[dict[str, Any]]) -> str:
    """The system instruction naming the functions and their parameters."""
    lines = ["Call exactly one of these functions. Answer with a JSON object {\"name\": ..., \"arguments\": {...}}."]
    for tool in tools:
        function = tool.get("function", {})
        lines.append(f"- {function['name']}: {function.get('description', '')} "
                     f"parameters: {json.dumps(function.get('parameters') or {})}")
    return "\n".join(lines)


def constrained(request: GenerationRequest, tools: list[dict[str, Any]]) -> GenerationRequest:
    """``request`` as the engine receives it: no tools, the functions described, output schema-bound."""
    instruction = ChatMessage("system", describe(tools))
    messages = (instruction, *request.messages)
    sampling = replace(request.sampling, json_mode=False, json_schema=call_schema(tools))
    return replace(request, messages=messages, sampling=sampling, tools=(), tool_choice=None,
                   parallel_tool_calls=None)


async def as_tool_call(chunks: AsyncIterator[GenerationChunk]) -> AsyncGenerator[GenerationChunk, None]:
    """The engine's JSON answer as one streamed tool call (id and name first, then argument pieces),
    ending with ``finish_reason: "tool_calls"``. An answer cut short (``length``) or not parseable
    is passed on as text with the engine's finish reason."""
    pieces: list[str] = []
    try:
        async for chunk in chunks:
            if chunk.finish_reason is None:
                pieces.append(chunk.text)
                continue
            pieces.append(chunk.text)
            text = "".join(pieces)
            call = _parse(text) if chunk.finish_reason == "stop" else None
            if call is None:
                yield GenerationChunk(text, chunk.usage)
                yield chunk
                return
            name, arguments = call
            yield GenerationChunk("", chunk.usage, tool_calls=[
                ToolCallDelta(0, id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments="")])
            for start in range(0, len(arguments), ARGUMENT_PIECE_CHARS):
                piece = arguments[start:start + ARGUMENT_PIECE_CHARS]
                yield GenerationChunk("", chunk.usage, tool_calls=[ToolCallDelta(0, arguments=piece)])
            yield replace(chunk, text="", finish_reason="tool_calls")
            return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _parse(text: str) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` from the engine's answer, or None when it is not a call."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments")
    return value["name"], json.dumps(arguments if isinstance(arguments, dict) else {}, ensure_ascii=False)
