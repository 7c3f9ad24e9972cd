"""One GenAI client span around an engine's generation stream, for every engine (embedded or remote).

Span name ``{gen_ai.operation.name} {model}`` (``chat smollm2-135m-instruct``) and attributes from
the OpenTelemetry GenAI semantic conventions (opentelemetry.io/docs/specs/semconv/gen-ai/
gen-ai-spans/): operation, provider, request model and sampling, response model, input/output
token usage and finish reasons. Prompt and completion text (``gen_ai.input.messages`` /
``gen_ai.output.messages``) only when ``observability.capture_content`` is on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from sovereign.observability import tracing
from sovereign.types import GenerationChunk, GenerationRequest


async def traced_generation(
    chunks: AsyncIterator[GenerationChunk], request: GenerationRequest, *, provider: str, model: str
) -> AsyncGenerator[GenerationChunk, None]:
    """Yield ``chunks`` unchanged inside a detached GenAI span that ends with the stream.

    Args:
        chunks: the engine's stream (closed when this generator closes: a client gone stops it).
        request: the request being generated (sampling parameters, and messages when captured).
        provider: ``gen_ai.provider.name`` (``llama.cpp``, ``vllm``, ``ollama``...).
        model: the model as the engine knows it (request and response model).
    """
    capture = tracing.capture_content()
    sampling = request.sampling
    operation = "chat" if request.is_chat else "text_completion"
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.request.max_tokens": sampling.max_tokens,
        "gen_ai.request.temperature": sampling.temperature,
        "gen_ai.request.top_p": sampling.top_p,
        "gen_ai.request.seed": sampling.seed,
        "gen_ai.response.model": model,
    }
    if capture:  # opt-in only (observability.capture_content): prompt text in the span
        attributes["gen_ai.input.messages"] = json.dumps(
            [{"role": m.role, "content": m.content} for m in request.messages]
            if request.is_chat else [{"role": "user", "content": request.prompt}]
        )
    with tracing.detached_span(f"{operation} {model}", **attributes) as current:
        output: list[str] = []
        try:
            async for chunk in chunks:
                if capture:
                    output.append(chunk.text)
                if chunk.finish_reason is not None:
                    current.set_attribute("gen_ai.usage.input_tokens", chunk.usage.prompt_tokens)
                    current.set_attribute("gen_ai.usage.output_tokens", chunk.usage.completion_tokens)
                    current.set_attribute("gen_ai.response.finish_reasons", [chunk.finish_reason])
                    if capture:
                        current.set_attribute("gen_ai.output.messages", json.dumps(
                            [{"role": "assistant", "content": "".join(output)}]))
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
