"""``POST /v1/chat/completions`` and ``POST /v1/completions``: JSON and SSE streaming.

Both endpoints authenticate (stage 1) and parse (stage 2), then hand the request to
:func:`sovereign.server.request_flow.generate`, which declares the remaining stages in order.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from sovereign.server.request_flow import generate
from sovereign.server.responses import OrjsonResponse
from sovereign.server.schemas import ERROR_RESPONSES, ChatCompletionRequest, CompletionRequest, SamplingFields
from sovereign.server.state import ignored_fields_headers, require_api_key
from sovereign.server.streaming import CompletionShape

router = APIRouter(responses=ERROR_RESPONSES)


def shape_for(body: SamplingFields, *, chat: bool) -> CompletionShape:
    """The OpenAI response shape for ``body`` (its ``stream_options``)."""
    options = body.stream_options
    return CompletionShape(model=body.model, chat=chat, include_usage=bool(options and options.include_usage),
                           continuous_usage=bool(options and options.continuous_usage_stats))


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    request: Request, body: ChatCompletionRequest, tenant: str = Depends(require_api_key)
) -> OrjsonResponse | StreamingResponse:
    """OpenAI chat completions (JSON, or SSE when ``stream`` is true)."""
    ignored = ignored_fields_headers(request, body)
    response = await generate(request, body.to_domain(), shape_for(body, chat=True), tenant=tenant,
                              stream=body.stream, cache_field=body.cache, metadata=body.metadata, n=body.n)
    response.headers.update(ignored)
    return response


@router.post("/v1/completions", response_model=None)
async def completions(
    request: Request, body: CompletionRequest, tenant: str = Depends(require_api_key)
) -> OrjsonResponse | StreamingResponse:
    """OpenAI legacy text completions (JSON, or SSE when ``stream`` is true)."""
    ignored = ignored_fields_headers(request, body)
    response = await generate(request, body.to_domain(), shape_for(body, chat=False), tenant=tenant,
                              stream=body.stream, cache_field=body.cache, n=body.n)
    response.headers.update(ignored)
    return response
