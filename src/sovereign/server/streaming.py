"""OpenAI response bodies and Server-Sent Events for chat and text completions.

A stream is ``data: {chunk}\\n\\n`` events ending with ``data: [DONE]``. With
``stream_options.include_usage`` a last chunk with empty ``choices`` carries ``usage``; with
``continuous_usage_stats`` every chunk carries the running ``usage``. An error after the first
byte was sent (the HTTP status is already 200) is sent as one ``data: {"error": {...}}`` event,
the OpenAI error envelope, followed by ``data: [DONE]``; clients such as the ``openai`` SDK raise
it as an ``APIError``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from fastapi.responses import StreamingResponse

from sovereign.errors import SovereignError
from sovereign.types import GenerationChunk, GenerationResult, Usage

DONE_EVENT = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering (nginx)


def sse_response(events: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    """A ``text/event-stream`` response of ``events`` with the no-buffering headers plus ``headers``."""
    return StreamingResponse(events, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})


def sse_event(payload: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event holding ``payload`` as compact JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ResponseShape(Protocol):
    """How one API renders a generation: the whole body, or SSE events chunk by chunk.

    ``extra`` holds Sovereign's additions (``{"sovereign": {...}}``: sources, route, cache) that the
    body and the final event carry. Implemented by :class:`CompletionShape` (OpenAI chat and text
    completions) and by the Responses and Anthropic Messages shapes.
    """

    extra: dict[str, Any]

    def body(self, result: GenerationResult) -> dict[str, Any]:
        """The whole (non-streamed) response body."""

    def events(self, chunk: GenerationChunk, *, first: bool) -> list[bytes]:
        """SSE events for one chunk; ``first`` for the first chunk of the answer."""

    def closing(self) -> list[bytes]:
        """Events after the final chunk (OpenAI: ``data: [DONE]``)."""

    def error_event(self, error: SovereignError) -> bytes:
        """The event reporting an error after the first byte was sent."""


@dataclass(slots=True)
class CompletionShape:
    """Builds chat (``chat.completion``) or text (``text_completion``) bodies for one response.

    ``include_usage`` / ``continuous_usage``: ``stream_options.include_usage`` and vLLM's
    ``continuous_usage_stats``. ``index`` is the choice index this shape renders (``n > 1`` uses
    one copy per choice, sharing ``id`` and ``extra``).
    """

    model: str
    chat: bool
    id: str = field(default_factory=lambda: "")
    created: int = field(default_factory=lambda: int(time.time()))
    extra: dict[str, Any] = field(default_factory=dict)
    include_usage: bool = False
    continuous_usage: bool = False
    index: int = 0

    def __post_init__(self) -> None:
        if not self.id:
            self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    @property
    def _object(self) -> str:
        return "chat.completion" if self.chat else "text_completion"

    def body(self, result: GenerationResult) -> dict[str, Any]:
        """The whole non-streamed response."""
        return self.body_of([result])

    def body_of(self, results: list[GenerationResult]) -> dict[str, Any]:
        """The whole response with one choice per result (``n``): the prompt counted once (as OpenAI
        does), completion tokens summed over the choices."""
        usage = Usage(results[0].usage.prompt_tokens, sum(r.usage.completion_tokens for r in results),
                      results[0].usage.cached_tokens)
        body = {"id": self.id, "object": self._object, "created": self.created, "model": self.model,
                "choices": [self._choice(r, i) for i, r in enumerate(results)], "usage": usage.to_dict()}
        body.update(self.extra)
        return body

    def _choice(self, result: GenerationResult, index: int) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": result.text or None}
            if result.tool_calls:
                message["tool_calls"] = [call.to_dict() for call in result.tool_calls]
            elif not result.text:
                message["content"] = ""
            return {
                "index": index,
                "message": message,
                "logprobs": {"content": result.logprobs} if result.logprobs is not None else None,
                "finish_reason": result.finish_reason,
            }
        return {"index": index, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}

    def chunk(self, text: str | None, finish_reason: str | None, *, first: bool = False,
              source: GenerationChunk | None = None) -> dict[str, Any]:
        """One streamed chunk; ``first`` adds the assistant role (chat only); ``source`` adds its
        tool-call pieces and log-probabilities."""
        if self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            if source is not None and source.tool_calls:
                delta["tool_calls"] = [piece.to_dict() for piece in source.tool_calls]
            logprobs = {"content": source.logprobs} if source is not None and source.logprobs else None
            choice: dict[str, Any] = {"index": self.index, "delta": delta, "logprobs": logprobs,
                                      "finish_reason": finish_reason}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": self.index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": [choice]}

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {
            "id": self.id, "object": obj, "created": self.created, "model": self.model,
            "choices": [], "usage": usage.to_dict(),
        }

    def closing(self) -> list[bytes]:
        """``data: [DONE]``."""
        return [DONE_EVENT]

    def error_event(self, error: SovereignError) -> bytes:
        """The OpenAI error envelope as one event (clients raise it as ``APIError``)."""
        return sse_event(error.to_envelope())

    def events(self, chunk: GenerationChunk, *, first: bool) -> list[bytes]:
        """SSE events for one engine chunk (the final one adds usage when asked)."""
        include_usage, continuous_usage = self.include_usage, self.continuous_usage
        out: list[bytes] = []
        if chunk.text or chunk.tool_calls or first or chunk.finish_reason is None:
            payload = self.chunk(chunk.text if chunk.text or not chunk.tool_calls else None, None, first=first,
                                 source=chunk)
            if continuous_usage:
                payload["usage"] = chunk.usage.to_dict()
            out.append(sse_event(payload))
        if chunk.finish_reason is not None:
            payload = self.chunk(None if self.chat else "", chunk.finish_reason)
            payload.update(self.extra)
            if continuous_usage:
                payload["usage"] = chunk.usage.to_dict()
            out.append(sse_event(payload))
            if include_usage:
                out.append(sse_event(self.usage_chunk(chunk.usage)))
        return out
