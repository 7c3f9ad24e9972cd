"""``POST /v1/rerank`` (also ``/rerank``, ``/v2/rerank``): the Jina / Cohere rerank shape.

Request: ``{"model", "query", "documents": [str | {"text": str}], "top_n"?, "return_documents"?}``.
Answer: ``{"model", "results": [{"index", "relevance_score", "document"?: {"text"}}], "usage":
{"total_tokens"}}``, best first. The scorer is the named embedding model (default
``embeddings.model_name``) as a bi-encoder: ``relevance_score`` is the cosine of the query's and
the document's unit vectors, in [-1, 1]. No cross-encoder wheel ships offline with the default
install, so this is what the embedded default can do; a reranking engine can be put behind the
same route later.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import Field

from sovereign.server.schemas import ERROR_RESPONSES, UnicodeChecked
from sovereign.server.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
MAX_DOCUMENTS = 1000


class TextDocument(UnicodeChecked):
    text: str = Field(min_length=1)


class RerankBody(UnicodeChecked):
    model: str | None = None
    query: str = Field(min_length=1)
    documents: list[str | TextDocument] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        """The documents as strings, in order."""
        return [d if isinstance(d, str) else d.text for d in self.documents]


@router.post("/v1/rerank")
@router.post("/rerank", include_in_schema=False)
@router.post("/v2/rerank", include_in_schema=False)
async def rerank(request: Request, body: RerankBody) -> dict[str, Any]:
    """Documents ranked by relevance to the query (best first, ``top_n`` of them)."""
    state = get_state(request)
    embedder = state.registry.embedding(body.model or state.settings.embeddings.model_name)
    texts = body.texts()
    vectors, tokens = await embedder.embed([body.query, *texts])
    scores = vectors[1:] @ vectors[0]
    order = np.argsort(-scores, kind="stable")[: body.top_n or len(texts)]
    results = []
    for i in order:
        row: dict[str, Any] = {"index": int(i), "relevance_score": round(float(scores[i]), 6)}
        if body.return_documents:
            row["document"] = {"text": texts[i]}
        results.append(row)
    return {"model": embedder.name, "results": results, "usage": {"total_tokens": tokens}}
