"""What the server holds for its lifetime, and the FastAPI dependencies that hand it out."""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from sovereign.security.keys import ANONYMOUS, Principal
from sovereign.server.schemas import WireModel

log = logging.getLogger("sovereign.server")

if TYPE_CHECKING:
    from sovereign.backends.routing_table import RouteControl
    from sovereign.cache.service import ResponseCache
    from sovereign.flags.service import FlagService
    from sovereign.observability.drift_monitor import DriftMonitor
    from sovereign.rag.service import RagService
    from sovereign.security.keys import KeyRing
    from sovereign.security.limits import RateLimiter
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
    keys: KeyRing | None = None  # stored API keys (the security start-up stage)
    limiter: RateLimiter | None = None  # per-key RPM/TPM buckets (the security start-up stage)
    flags: FlagService | None = None  # feature flags and rollouts (the last start-up stage)
    drift: DriftMonitor | None = None  # drift on live traffic (the drift start-up stage, when enabled)

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

    def require_drift(self) -> DriftMonitor:
        """The drift monitor, or EngineUnavailableError (503) when drift detection is not running."""
        if self.drift is None:
            why = self.off.get("drift", "set drift.enabled = true (SOVEREIGN_DRIFT__ENABLED=true) with the mlops "
                                        "extra installed (pip install 'sovereign[mlops]').")
            raise EngineUnavailableError(f"Drift detection is not running on this server: {why}")
        return self.drift

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


_MISSING = "Missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."


def _env_principal(state: AppState, token: str | None) -> Principal | None:
    """A key from ``server.api_keys_env`` / ``admin_keys_env``: tenant ``key-N`` by position."""
    if token is None:
        return None
    for i, key in enumerate(state.api_keys + state.admin_keys):
        if hmac.compare_digest(token, key):
            admin = i >= len(state.api_keys)
            return Principal(f"env-{i}", "admin" if admin else "user", f"key-{i}")
    return None


async def authenticate(request: Request) -> Principal:
    """Who calls: an env key, a stored key (:class:`~sovereign.security.keys.KeyRing`), or, when no
    key exists at all, :data:`~sovereign.security.keys.ANONYMOUS` (single-user local mode, served on
    loopback only). Cached on the request.

    Raises:
        AuthenticationError: keys exist and the token matches none (missing, wrong, revoked, expired).
    """
    scope_state = request.scope.setdefault("state", {})
    cached = scope_state.get("principal")
    if isinstance(cached, Principal):
        return cached
    state = get_state(request)
    token = _bearer(request)
    principal = _env_principal(state, token)
    if principal is None and token is not None and state.keys is not None:
        principal = await state.keys.verify(token)
    if principal is None:
        stored = await state.keys.active_count() if state.keys is not None else 0
        if state.api_keys or state.admin_keys or stored:
            raise AuthenticationError(_MISSING)
        principal = ANONYMOUS
    scope_state["principal"] = principal
    return principal


async def require_api_key(request: Request) -> str:
    """FastAPI dependency for the API: authenticate, admit under the key's RPM/TPM limits (TPM is
    charged with the request's tokens when it ends), return the caller's tenant.

    Raises:
        AuthenticationError (401) / RateLimitError (429 with Retry-After).
    """
    principal = await authenticate(request)
    limiter = get_state(request).limiter
    if limiter is not None and (principal.rpm or principal.tpm):
        await limiter.admit(principal)
        if principal.tpm:
            async def charge(scope_state: dict[str, Any]) -> None:
                tokens = sum(int(scope_state.get(k) or 0) for k in ("prompt_tokens", "completion_tokens"))
                await limiter.charge_tokens(principal, tokens)

            request.scope["state"].setdefault("on_finish", []).append(charge)
    return principal.tenant


async def require_admin(request: Request) -> None:
    """Admin endpoints (FastAPI dependency): a key of scope ``admin`` (any caller in local mode).

    Raises:
        AuthenticationError (401) / PermissionDeniedError (403).
    """
    if not (await authenticate(request)).admin:
        raise PermissionDeniedError("This endpoint needs an API key of scope admin.")


def check_model_allowed(request: Request, model: str) -> None:
    """Raises PermissionDeniedError (403, ``model_not_allowed``) when the caller's key lists models
    and ``model`` is not one of them."""
    principal = request.scope.get("state", {}).get("principal")
    if isinstance(principal, Principal) and principal.models is not None and model not in principal.models:
        raise PermissionDeniedError(f"This API key may not use model {model!r}; it may use "
                                    f"{', '.join(principal.models)}.", param="model", code="model_not_allowed")
