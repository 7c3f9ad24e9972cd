"""Domain <-> OpenAI chat wire pieces that every OpenAI-compatible engine shares.

Messages with tool calls and tool results, tool-call pieces in stream deltas, whole-answer tool
calls, and log-probabilities, in the shapes of the OpenAI Chat Completions API
(https://platform.openai.com/docs/api-reference/chat).
"""

from __future__ import annotations

from typing import Any

from sovereign.types import ChatMessage, ToolCall, ToolCallDelta


def wire_message(message: ChatMessage) -> dict[str, Any]:
    """One domain message as an OpenAI ``messages[]`` item (``tool_calls``, ``tool_call_id``, ``name``)."""
    out: dict[str, Any] = {"role": message.role, "content": list(message.parts) if message.parts else message.content}
    if message.tool_calls:
        out["tool_calls"] = [call.to_dict() for call in message.tool_calls]
        if not message.content:
            out["content"] = None
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def delta_tool_calls(delta: dict[str, Any]) -> list[ToolCallDelta]:
    """The tool-call pieces of one stream ``delta`` (empty list when there are none).

    Raises:
        KeyError / TypeError / ValueError: a malformed piece (the caller reports engine garbage).
    """
    pieces = []
    for item in delta.get("tool_calls") or ():
        function = item.get("function") or {}
        pieces.append(ToolCallDelta(index=int(item.get("index", 0)), id=item.get("id"), name=function.get("name"),
                                    arguments=function.get("arguments") or ""))
    return pieces


def message_tool_calls(message: dict[str, Any]) -> list[ToolCallDelta]:
    """A whole answer's ``message.tool_calls`` as one piece per call (same shape as a stream)."""
    return [ToolCallDelta(index=i, id=item.get("id") or f"call_{i}", name=(item.get("function") or {}).get("name"),
                          arguments=(item.get("function") or {}).get("arguments") or "")
            for i, item in enumerate(message.get("tool_calls") or ())]


def choice_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``choice.logprobs.content`` (OpenAI token log-probability items), or None when absent."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    return list(content) if content else None


def tool_call_from(call: dict[str, Any]) -> ToolCall:
    """A request's assistant ``tool_calls[]`` item as a :class:`ToolCall`."""
    function = call.get("function") or {}
    return ToolCall(id=str(call.get("id") or ""), name=str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""))
