"""Feature flags and rollouts over HTTP.

Applications (any API key):

- ``POST /v1/flags/{name}/evaluate`` ``{"user", "attributes": {"header:x-team": ...}}`` -> ``{"flag",
  "variant", "enabled", "reason"}`` for the caller's key and tenant (the OpenFeature provider calls it).

Operators (``require_admin``):

- ``GET /admin/flags``, ``GET /admin/flags/{name}``, ``PUT /admin/flags/{name}`` (partial fields:
  ``enabled``, ``kind``, ``percentage``, ``variants``, ``rules``, ``depends_on``).
- ``GET /admin/rollouts``; ``POST /admin/rollouts`` (a :class:`~sovereign.flags.rollout.RolloutSpec`,
  plus ``dry_run``); ``GET /admin/rollouts/{target}`` (with its audit log);
  ``POST /admin/rollouts/{action}`` ``{"target"}`` (``pause``, ``resume``, ``promote``, ``abort``).
  ``target`` is ``route:MODEL`` or ``flag:NAME`` (a model name may hold ``/``).

Errors: 404 unknown flag, route, deployment or rollout; 400 a change that breaks the flag set or a
bad spec; 409 a second active rollout of one target, or an action that does not apply.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from sovereign.flags.evaluation import EvaluationContext
from sovereign.flags.model import Kind, Rule
from sovereign.flags.rollout import RolloutSpec
from sovereign.server.schemas import UnicodeChecked
from sovereign.server.state import get_state, require_admin, require_api_key

router = APIRouter()
ACTOR = "admin-api"


class EvaluateBody(UnicodeChecked):
    """Who asks, beyond the API key: ``user`` and extra ``attributes`` (``header:NAME`` keys)."""

    user: str | None = Field(None, max_length=256)
    attributes: dict[str, str] = Field(default_factory=dict, max_length=64)


class FlagChange(UnicodeChecked):
    """Run-time values of one flag; omitted fields keep their value."""

    enabled: bool | None = None
    kind: Kind | None = None
    percentage: float | None = Field(None, ge=0, le=100)
    variants: dict[str, float] | None = None
    rules: list[Rule] | None = None
    depends_on: list[str] | None = None


class StartBody(RolloutSpec):
    dry_run: bool = False


class TargetBody(UnicodeChecked):
    target: str = Field(min_length=1, max_length=512, pattern=r"^(route|flag):.+")


@router.post("/v1/flags/{name}/evaluate")
async def evaluate_flag(request: Request, name: str, body: EvaluateBody,
                        tenant: str = Depends(require_api_key)) -> dict[str, Any]:
    """Evaluate flag ``name`` for the caller (key id and tenant from its API key)."""
    headers = {k.removeprefix("header:").lower(): v for k, v in body.attributes.items() if k.startswith("header:")}
    ctx = EvaluationContext(user=body.user, api_key=tenant, tenant=tenant, headers=headers)
    result = get_state(request).require_flags().evaluate(name, ctx)
    return {"flag": name, "variant": result.variant, "enabled": result.enabled, "reason": result.reason}


@router.get("/admin/flags", dependencies=[Depends(require_admin)])
async def list_flags(request: Request) -> dict[str, Any]:
    """Every effective flag (file or built-in, with run-time values and rollouts applied)."""
    flags = get_state(request).require_flags().flags
    return {"object": "list", "data": [f.model_dump() for f in flags.values()]}


@router.get("/admin/flags/{name}", dependencies=[Depends(require_admin)])
async def get_flag(request: Request, name: str) -> dict[str, Any]:
    service = get_state(request).require_flags()
    service.evaluate(name, EvaluationContext())  # 404 for an unknown name
    return {**service.flags[name].model_dump(), "events": await service.store.events(f"flag:{name}", 20)}


@router.put("/admin/flags/{name}", dependencies=[Depends(require_admin)])
async def set_flag(request: Request, name: str, body: FlagChange) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    flag = await get_state(request).require_flags().set_flag(name, changes, ACTOR)
    return flag.model_dump()


@router.get("/admin/rollouts", dependencies=[Depends(require_admin)])
async def list_rollouts(request: Request) -> dict[str, Any]:
    service = get_state(request).require_flags()
    return {"object": "list", "data": [service.describe(t) for t in sorted(service.rollouts)]}


@router.post("/admin/rollouts", dependencies=[Depends(require_admin)])
async def start_rollout(request: Request, body: StartBody, tenant: str = Depends(require_api_key)) -> dict[str, Any]:
    """Start (or ``dry_run``) a rollout; an evaluation gate without a tenant searches the caller's documents."""
    spec = RolloutSpec.model_validate(body.model_dump(exclude={"dry_run"}))
    if spec.gate is not None and spec.gate.tenant is None:
        spec = spec.model_copy(update={"gate": spec.gate.model_copy(update={"tenant": tenant})})
    return await get_state(request).require_flags().start_rollout(spec, ACTOR, dry_run=body.dry_run)


@router.get("/admin/rollouts/{target:path}", dependencies=[Depends(require_admin)])
async def get_rollout(request: Request, target: str) -> dict[str, Any]:
    service = get_state(request).require_flags()
    described = service.describe(target)
    since = described["state"]["started_at"]  # this rollout's events, not an earlier one's of the target
    return {**described, "events": [e for e in await service.store.events(target, 500) if e["at"] >= since]}


@router.post("/admin/rollouts/{action}", dependencies=[Depends(require_admin)])
async def act_on_rollout(request: Request, action: str, body: TargetBody) -> dict[str, Any]:
    return await get_state(request).require_flags().act(body.target, action, ACTOR)
