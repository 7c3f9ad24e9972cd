"""``POST /v1/embeddings``: string or list input, ``float`` or ``base64`` encoding."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from sovereign.errors import UnsupportedParameterError
from sovereign.rag.embeddings import encode_vector
from sovereign.server.responses import OrjsonResponse
from sovereign.server.schemas import ERROR_RESPONSES, EmbeddingRequest
from sovereign.server.state import get_state, ignored_fields_headers, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@router.post("/v1/embeddings")
async def create_embeddings(request: Request, body: EmbeddingRequest) -> OrjsonResponse:
    """Embed each input; ``data[i].embedding`` is a unit vector (float list or base64 float32)."""
    ignored = ignored_fields_headers(request, body)
    backend = get_state(request).registry.embedding(body.model)
    request.scope["state"]["model"] = backend.name
    texts = body.texts()
    if body.dimensions is not None and body.dimensions != backend.dimensions:
        raise UnsupportedParameterError(
            f"{backend.name} returns {backend.dimensions} dimensions; it cannot return {body.dimensions}.",
            param="dimensions",
        )
    vectors, tokens = await backend.embed(texts)
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return OrjsonResponse({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }, headers=ignored)
