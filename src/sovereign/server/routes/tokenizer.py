"""``POST /tokenize`` and ``POST /detokenize``: a model's own tokenizer, as llama.cpp's server and vLLM serve it.

Request: ``{"model"?: name, "content" | "prompt": text, "add_special"?: bool}`` (llama.cpp's and
vLLM's spellings); answer ``{"tokens": [...], "count": n, "max_model_len": window}``.
Detokenize: ``{"model"?: name, "tokens": [ids]}`` -> ``{"content": text}``. ``model`` defaults to
``engine.model_name``. A model without a tokenizer endpoint (a route over remote engines, a
pipeline) answers 400 ``unsupported_parameter`` naming ``tokenize``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, model_validator

from sovereign.backends.base import ChatBackend, Tokenizing
from sovereign.errors import InvalidRequestError, UnsupportedParameterError
from sovereign.server.schemas import ERROR_RESPONSES, UnicodeChecked
from sovereign.server.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


class TokenizeBody(UnicodeChecked):
    model: str | None = None
    content: str | None = None
    prompt: str | None = None
    add_special: bool = False

    @model_validator(mode="after")
    def _one_text(self) -> TokenizeBody:
        if (self.content is None) == (self.prompt is None):
            raise ValueError("send exactly one of 'content' or 'prompt'")
        return self


class DetokenizeBody(UnicodeChecked):
    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


def _tokenizer(request: Request, model: str | None) -> tuple[ChatBackend, Tokenizing]:
    state = get_state(request)
    backend = state.registry.chat(model or state.settings.engine.model_name)
    if not isinstance(backend, Tokenizing):
        raise UnsupportedParameterError(f"Model {backend.name} has no tokenizer endpoint.", param="tokenize")
    return backend, backend


@router.post("/tokenize")
async def tokenize(request: Request, body: TokenizeBody) -> dict[str, Any]:
    """Token ids of the text under the model's own tokenizer."""
    backend, tokenizer = _tokenizer(request, body.model)
    tokens = await tokenizer.tokenize(body.content if body.content is not None else body.prompt or "",
                                      add_special=body.add_special)
    return {"tokens": tokens, "count": len(tokens), "max_model_len": backend.capabilities.context_window}


@router.post("/detokenize")
async def detokenize(request: Request, body: DetokenizeBody) -> dict[str, Any]:
    """The text of the token ids. Raises InvalidRequestError for a negative id."""
    if any(t < 0 for t in body.tokens):
        raise InvalidRequestError("Token ids are non-negative integers.", param="tokens")
    _, tokenizer = _tokenizer(request, body.model)
    return {"content": await tokenizer.detokenize(body.tokens)}
