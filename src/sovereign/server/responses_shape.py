"""OpenAI Responses API rendering: the ``response`` object and its streamed events.

:class:`ResponsesShape` implements :class:`~sovereign.server.streaming.ResponseShape`. An answer is
``output`` items: a ``message`` with one ``output_text`` part (absent when the model only called
functions), then one ``function_call`` item per call. ``status`` is ``completed``, or
``incomplete`` with ``incomplete_details.reason = "max_output_tokens"`` when the output budget ran
out. A stream is SSE events ``event: <type>`` + ``data: <json>``, each with a rising
``sequence_number``::

    response.created, response.in_progress,
    [response.output_item.added (message), response.content_part.added,
     response.output_text.delta..., response.output_text.done, response.content_part.done,
     response.output_item.done]
    [response.output_item.added (function_call), response.function_call_arguments.delta...,
     response.function_call_arguments.done, response.output_item.done] per call,
    response.completed | response.incomplete   (the whole response, usage included)

There is no ``data: [DONE]``. An error after the first byte (the status is already 200) is an
``error`` event (``code``, ``message``, ``param``) followed by ``response.failed``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from sovereign.errors import SovereignError
from sovereign.types import GenerationChunk, GenerationResult, ToolCall, Usage


def new_id(prefix: str) -> str:
    """An OpenAI-style object id: ``prefix`` + ``_`` + 48 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


def usage_of(usage: Usage) -> dict[str, Any]:
    """The Responses ``usage`` object."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def output_text(text: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def message_item(item_id: str, text: str, logprobs: list[dict[str, Any]] | None, status: str) -> dict[str, Any]:
    """An assistant ``message`` output item (one ``output_text`` part; none while in progress)."""
    content = [output_text(text, logprobs)] if status != "in_progress" else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    """A ``function_call`` output item."""
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name,
            "arguments": call.arguments}


@dataclass(slots=True)
class _OpenCall:
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def call(self) -> ToolCall:
        return ToolCall(self.call_id, self.name, "".join(self.arguments))


@dataclass(slots=True)
class ResponsesShape:
    """Renders one answer as a Responses ``response`` body or as its SSE events.

    ``request`` holds the request fields the response repeats
    (:func:`sovereign.server.responses_wire.echo`); ``extra`` is Sovereign's ``sovereign`` field,
    in the body and in the final event's response; ``on_output`` receives the finished ``output``
    items of a completed or incomplete response (the route stores them for ``previous_response_id``).
    """

    model: str
    request: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    extra: dict[str, Any] = field(default_factory=dict)
    sequence: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    message_id: str | None = None
    message_index: int = -1
    calls: dict[int, _OpenCall] = field(default_factory=dict)
    finished: bool = False
    on_output: Callable[[str, list[dict[str, Any]]], None] | None = None

    def response(self, status: str, output: list[dict[str, Any]], usage: Usage | None,
                 error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``response`` object in ``status`` with ``output`` items."""
        body: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None, "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.model, "output": output, **self.request,
            "usage": usage_of(usage) if usage is not None else None,
        }
        if status in ("completed", "incomplete", "failed"):
            body.update(self.extra)
        return body

    def body(self, result: GenerationResult) -> dict[str, Any]:
        """The whole non-streamed response."""
        status = "incomplete" if result.finish_reason == "length" else "completed"
        output: list[dict[str, Any]] = []
        if result.text or not result.tool_calls:
            output.append(message_item(new_id("msg"), result.text, result.logprobs, status))
        output += [call_item(new_id("fc"), call, "completed") for call in result.tool_calls]
        if self.on_output is not None:
            self.on_output(self.id, output)
        return self.response(status, output, result.usage)

    def _event(self, kind: str, **payload: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def events(self, chunk: GenerationChunk, *, first: bool) -> list[bytes]:
        """SSE events for one engine chunk (the opening events before the first one, the closing
        events and ``response.completed`` / ``response.incomplete`` with the final one)."""
        out: list[bytes] = []
        if first:
            out.append(self._event("response.created", response=self.response("in_progress", [], None)))
            out.append(self._event("response.in_progress", response=self.response("in_progress", [], None)))
        if chunk.text:
            if self.message_id is None:
                out += self._open_message()
            self.text.append(chunk.text)
            self.logprobs += chunk.logprobs or []
            out.append(self._event("response.output_text.delta", item_id=self.message_id,
                                   output_index=self.message_index, content_index=0, delta=chunk.text,
                                   logprobs=chunk.logprobs or []))
        for piece in chunk.tool_calls or ():
            call = self.calls.get(piece.index)
            if call is None:
                out += self._close_message("completed")
                call = _OpenCall(new_id("fc"), len(self.output), piece.id or new_id("call"), piece.name or "")
                self.calls[piece.index] = call
                self.output.append(call_item(call.item_id, call.call(), "in_progress"))
                out.append(self._event("response.output_item.added", output_index=call.output_index,
                                       item=call_item(call.item_id, call.call(), "in_progress")))
            if piece.arguments:
                call.arguments.append(piece.arguments)
                out.append(self._event("response.function_call_arguments.delta", item_id=call.item_id,
                                       output_index=call.output_index, delta=piece.arguments))
        if chunk.finish_reason is not None:
            out += self._finish(chunk)
        return out

    def _open_message(self) -> list[bytes]:
        self.message_id, self.message_index = new_id("msg"), len(self.output)
        self.output.append(message_item(self.message_id, "", None, "in_progress"))
        return [
            self._event("response.output_item.added", output_index=self.message_index,
                        item=message_item(self.message_id, "", None, "in_progress")),
            self._event("response.content_part.added", item_id=self.message_id, output_index=self.message_index,
                        content_index=0, part=output_text("", None)),
        ]

    def _close_message(self, status: str) -> list[bytes]:
        if self.message_id is None or self.output[self.message_index]["status"] != "in_progress":
            return []
        text, logprobs = "".join(self.text), self.logprobs
        item = message_item(self.message_id, text, logprobs, status)
        self.output[self.message_index] = item
        where = {"item_id": self.message_id, "output_index": self.message_index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=logprobs),
            self._event("response.content_part.done", **where, part=output_text(text, logprobs)),
            self._event("response.output_item.done", output_index=self.message_index, item=item),
        ]

    def _finish(self, chunk: GenerationChunk) -> list[bytes]:
        status = "incomplete" if chunk.finish_reason == "length" else "completed"
        out: list[bytes] = []
        if self.message_id is None and not self.calls:  # an empty answer is an empty message, as in body()
            out += self._open_message()
        out += self._close_message(status)
        for call in self.calls.values():
            item = call_item(call.item_id, call.call(), "completed")
            self.output[call.output_index] = item
            out.append(self._event("response.function_call_arguments.done", item_id=call.item_id,
                                   output_index=call.output_index, arguments=item["arguments"]))
            out.append(self._event("response.output_item.done", output_index=call.output_index, item=item))
        self.finished = True
        if self.on_output is not None:
            self.on_output(self.id, self.output)
        out.append(self._event(f"response.{status}", response=self.response(status, self.output, chunk.usage)))
        return out

    def closing(self) -> list[bytes]:
        """Nothing: a Responses stream ends with its terminal event, without ``data: [DONE]``."""
        return []

    def error_event(self, error: SovereignError) -> bytes:
        """An ``error`` event, then ``response.failed`` with the output so far (the status is already 200)."""
        failed = self._event("error", code=error.code or error.error_type, message=error.message, param=error.param)
        if self.finished:
            return failed
        self.finished = True
        response = self.response("failed", self.output, None, error={"code": "server_error", "message": error.message})
        return failed + self._event("response.failed", response=response)
