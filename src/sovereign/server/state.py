"""What the server holds for its lifetime, and the FastAPI dependencies that hand it out."""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from sovereign.backends.registry import ModelRegistry
from sovereign.config import Settings, resolve_secret
from sovereign.errors import (
    AuthenticationError,
    ConfigError,
    EngineUnavailableError,
    InvalidRequestError,
    PermissionDeniedError,
)
from sovereign.server.schemas import WireModel

log = logging.getLogger("sovereign.server")

if TYPE_CHECKING:
    from sovereign.backends.routing_table import RouteControl
    from sovereign.cache.service import ResponseCache
    from sovereign.flags.service import FlagService
    from sovereign.rag.service import RagService
    from sovereign.server.routes.responses import ResponseStore


@dataclass
class AppState:
    """Everything assembled at start-up (see :mod:`sovereign.server.startup` for the order).

    Attributes:
        settings: loaded settings. registry: public model names -> chat and embedding backends.
        rag: document memory, None when off or not installed.
        cache: the response cache, None when off.
        routing: deployments, routes and the switchable default route (set once started).
        api_keys / admin_keys: accepted bearer tokens (empty: single-user local mode).
        off: room -> why it is not running (a missing extra), for error messages.
    """

    settings: Settings
    registry: ModelRegistry
    rag: RagService | None = None
    cache: ResponseCache | None = None
    routing: RouteControl | None = None
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    off: dict[str, str] = field(default_factory=dict)
    responses: ResponseStore | None = None  # /v1/responses history for previous_response_id (first use)
    flags: FlagService | None = None  # feature flags and rollouts (the last start-up stage)

    @classmethod
    def build(cls, settings: Settings, registry: ModelRegistry) -> AppState:
        def keys(env: str | None) -> tuple[str, ...]:
            raw = resolve_secret(env) or ""
            return tuple(k.strip() for k in raw.split(",") if k.strip())

        return cls(settings, registry, api_keys=keys(settings.server.api_keys_env),
                   admin_keys=keys(settings.server.admin_keys_env))

    def require_rag(self) -> RagService:
        """Document memory, or EngineUnavailableError (503) when it is not running."""
        if self.rag is None:
            why = self.off.get("rag", "")
            raise EngineUnavailableError(f"Document memory is not available on this server. {why}".strip())
        return self.rag

    def require_flags(self) -> FlagService:
        """The flag service, or ConfigError before it started."""
        if self.flags is None:
            raise ConfigError("Feature flags are not running yet; retry once the gateway has started.")
        return self.flags

    def require_routing(self) -> RouteControl:
        """The routing table, or ConfigError when it was not started."""
        if self.routing is None:
            raise ConfigError("Routing is not started on this server.")
        return self.routing


def ignored_fields_headers(request: Request, body: WireModel) -> dict[str, str]:
    """Lenient parsing's report: ``X-Sovereign-Ignored-Fields`` naming ``body``'s unknown fields
    (logged too), or nothing when there are none.

    Raises:
        InvalidRequestError: there are some and ``server.strict_requests`` is on.
    """
    ignored = body.ignored_fields()
    if not ignored:
        return {}
    if get_state(request).settings.server.strict_requests:
        raise InvalidRequestError(f"Unknown request field(s): {', '.join(ignored)} (server.strict_requests is on).",
                                  param=ignored[0])
    log.warning("ignored unknown request fields", extra={"fields": [ascii(name) for name in ignored]})
    return {"X-Sovereign-Ignored-Fields": ", ".join(json.dumps(name)[1:-1] for name in ignored)}  # ASCII only


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.sovereign
    return state


def _bearer(request: Request) -> str | None:
    """The API key of the request: ``Authorization: Bearer <key>`` (OpenAI clients) or
    ``x-api-key: <key>`` (Anthropic clients)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip() or None


def _matches(token: str | None, keys: tuple[str, ...]) -> bool:
    return token is not None and any(hmac.compare_digest(token, k) for k in keys)


def tenant_of(request: Request) -> str:
    """The caller's tenant id: its API key's index (``key-N``), or ``anonymous`` when auth is off.

    Raises:
        AuthenticationError: keys are configured and the bearer token matches none.
    """
    state = get_state(request)
    if not state.api_keys and not state.admin_keys:
        return "anonymous"
    token = _bearer(request)
    for i, key in enumerate(state.api_keys + state.admin_keys):
        if token is not None and hmac.compare_digest(token, key):
            return f"key-{i}"
    raise AuthenticationError("Missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")


async def require_api_key(request: Request) -> str:
    """FastAPI dependency: :func:`tenant_of`. Async on purpose: FastAPI runs a plain ``def``
    dependency in a worker thread, a thread hop on every request."""
    return tenant_of(request)


async def require_admin(request: Request) -> None:
    """Admin endpoints (FastAPI dependency): an admin key, or no keys configured at all
    (single-user local mode).

    Raises:
        AuthenticationError / PermissionDeniedError.
    """
    state = get_state(request)
    if not state.api_keys and not state.admin_keys:
        return
    token = _bearer(request)
    if _matches(token, state.admin_keys):
        return
    if _matches(token, state.api_keys):
        raise PermissionDeniedError("This endpoint needs an admin API key.")
    raise AuthenticationError("Missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
