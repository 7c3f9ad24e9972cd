"""The response cache over HTTP, for operators (``require_admin``):

- ``GET /admin/cache``: entries, backend and hit figures (``ResponseCache.stats``).
- ``DELETE /admin/cache``: delete every cached response, all tenants -> ``{"deleted": n}``.

Errors: 503 when the response cache is off (``cache.enabled = false``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from sovereign.errors import EngineUnavailableError
from sovereign.server.state import get_state, require_admin

router = APIRouter(dependencies=[Depends(require_admin)])


def _cache(request: Request) -> Any:
    cache = get_state(request).cache
    if cache is None:
        raise EngineUnavailableError("The response cache is off on this server (cache.enabled = false).")
    return cache


@router.get("/admin/cache")
async def cache_stats(request: Request) -> dict[str, Any]:
    return dict(await _cache(request).stats())


@router.delete("/admin/cache")
async def cache_clear(request: Request) -> dict[str, int]:
    return {"deleted": await _cache(request).clear()}
