"""Routing administration (``require_admin``):

- ``GET /admin/backends``: default route, routes and every deployment's health, latency, breaker.
- ``PUT /admin/backends/default`` ``{"route": NAME}``: switch the default route at run time (the
  next request uses it); 404 ``route_not_found`` for an unknown name.
- ``POST /admin/backends/ping`` ``{"name": NAME | null}``: probe now.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from sovereign.backends.routing_table import RouteControl
from sovereign.server.schemas import ERROR_RESPONSES, UnicodeChecked
from sovereign.server.state import get_state, require_admin

router = APIRouter(responses=ERROR_RESPONSES)


class _Body(UnicodeChecked):
    """Admin bodies: unknown fields are errors, strings must be valid Unicode."""


class UseRoute(_Body):
    route: str = Field(min_length=1, max_length=256)


class Ping(_Body):
    name: str | None = Field(None, max_length=256)


def control_of(request: Request) -> RouteControl:
    """The routing room's control object. Raises ConfigError before it started."""
    return get_state(request).require_routing()


@router.get("/admin/backends", dependencies=[Depends(require_admin)])
async def list_backends(request: Request) -> dict[str, Any]:
    """Default route, routes and deployment health / latency / breaker state."""
    return control_of(request).status()


@router.put("/admin/backends/default", dependencies=[Depends(require_admin)])
async def use_backend(request: Request, body: UseRoute) -> dict[str, Any]:
    """Point ``default_model`` at another model or deployment, without a restart."""
    control = control_of(request)
    previous = control.use(body.route)
    return {"default_model": control.default_model, "default_route": control.current, "previous": previous}


@router.post("/admin/backends/ping", dependencies=[Depends(require_admin)])
async def ping_backends(request: Request, body: Ping) -> dict[str, Any]:
    """Probe one deployment (or all) now."""
    return {"deployments": await control_of(request).probe(body.name)}
