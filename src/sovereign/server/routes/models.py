"""``GET /v1/models`` and ``GET /v1/models/{model}`` (aliases are listed and resolved as models)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from sovereign.backends.base import FEATURES
from sovereign.backends.registry import ModelInfo
from sovereign.server.schemas import ERROR_RESPONSES
from sovereign.server.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
_CREATED = int(time.time())


def _row(info: ModelInfo) -> dict[str, object]:
    """The OpenAI model object, plus (chat models) ``context_window`` and the ``capabilities`` flags."""
    row: dict[str, object] = {"id": info.id, "object": "model", "created": _CREATED, "owned_by": info.owned_by}
    if info.capabilities is not None:
        row["context_window"] = info.capabilities.context_window
        row["capabilities"] = {f: not info.capabilities.missing([f]) for f in FEATURES}
    return row


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, object]:
    """Every public model name: chat models and their aliases, then embedding models and theirs."""
    rows = [_row(m) for m in get_state(request).registry.models()]
    return {"object": "list", "data": rows}


@router.get("/v1/models/{model:path}")
async def get_model(request: Request, model: str) -> dict[str, object]:
    """One model or alias, as listed. Raises ModelNotFoundError (404) for an unknown name."""
    return _row(get_state(request).registry.model(model))
