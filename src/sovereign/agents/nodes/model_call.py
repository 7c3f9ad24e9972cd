"""One model call as the nodes make it: stream, collect text and usage, one span per call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sovereign.backends.base import ChatBackend
from sovereign.observability.tracing import span
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams, Usage


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Span attributes with dotted names (typed for ``span(**...)``)."""
    return values


@dataclass(slots=True)
class ModelReply:
    """The whole text of one generation and its token usage (prompt and completion tokens)."""

    text: str
    usage: Usage
    finish_reason: str


async def call_model(
    model: ChatBackend,
    messages: Sequence[ChatMessage],
    sampling: SamplingParams,
    *,
    purpose: str,
    on_token: Callable[[str], None] | None = None,
) -> ModelReply:
    """Stream ``messages`` through ``model``; ``on_token`` gets each text piece as it arrives.

    Opens span ``agent.model.call`` (attributes: model name, purpose, token counts).

    Raises:
        whatever ``model.stream`` raises (ContextLengthExceededError, EngineError...).
    """
    request = GenerationRequest(model=model.name, sampling=sampling, messages=tuple(messages))
    parts: list[str] = []
    usage = Usage()
    finish = "stop"
    with span("agent.model.call", **_attrs({"gen_ai.request.model": model.name, "agent.purpose": purpose})) as current:
        stream = model.stream(request)
        try:
            async for chunk in stream:
                if chunk.text:
                    parts.append(chunk.text)
                    if on_token is not None:
                        on_token(chunk.text)
                usage = chunk.usage
                if chunk.finish_reason is not None:
                    finish = chunk.finish_reason
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        current.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        current.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    return ModelReply("".join(parts), usage, finish)
