"""``POST /v1/chat/completions`` and ``POST /v1/completions``: JSON and SSE streaming.

Both endpoints authenticate (stage 1) and parse (stage 2), then hand the request to
:func:`sovereign.server.request_flow.generate`, which declares the remaining stages in order.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from sovereign.server.request_flow import generate
from sovereign.server.responses import OrjsonResponse
from sovereign.server.schemas import ChatCompletionRequest, CompletionRequest
from sovereign.server.state import require_api_key

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    request: Request, body: ChatCompletionRequest, tenant: str = Depends(require_api_key)
) -> OrjsonResponse | StreamingResponse:
    """OpenAI chat completions (JSON, or SSE when ``stream`` is true)."""
    return await generate(request, body, body.to_domain(), tenant=tenant, chat=True, metadata=body.metadata)


@router.post("/v1/completions", response_model=None)
async def completions(
    request: Request, body: CompletionRequest, tenant: str = Depends(require_api_key)
) -> OrjsonResponse | StreamingResponse:
    """OpenAI legacy text completions (JSON, or SSE when ``stream`` is true)."""
    return await generate(request, body, body.to_domain(), tenant=tenant, chat=False)
