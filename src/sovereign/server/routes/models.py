"""``GET /v1/models`` and ``GET /v1/models/{model}`` (aliases are listed and resolved as models)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from sovereign.server.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])
_CREATED = int(time.time())


def _row(model_id: str, owned_by: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": owned_by}


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, object]:
    """Every public model name: chat models and their aliases, then embedding models and theirs."""
    rows = [_row(m.id, m.owned_by) for m in get_state(request).registry.models()]
    return {"object": "list", "data": rows}


@router.get("/v1/models/{model:path}")
async def get_model(request: Request, model: str) -> dict[str, object]:
    """One model or alias, as listed. Raises ModelNotFoundError (404) for an unknown name."""
    row = get_state(request).registry.model(model)
    return _row(row.id, row.owned_by)
