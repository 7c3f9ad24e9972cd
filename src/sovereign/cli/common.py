"""Options and helpers shared by command modules: settings loading with ``--config``, and the
gateway's admin API (``--url``, ``--admin-key``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from sovereign.config import Settings, load_settings, resolve_secret
from sovereign.errors import EngineUnavailableError, InvalidRequestError, NotFoundError, SovereignError

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (default: $SOVEREIGN_CONFIG).")
]


def settings_from(config: Path | None, **sections: dict[str, Any]) -> Settings:
    """Load settings, overlaying CLI flags given as partial sections (``engine={"n_ctx": 4096}``)."""
    base = load_settings(config)
    if not sections:
        return base
    merged = base.model_dump()
    for name, values in sections.items():
        merged[name].update({k: v for k, v in values.items() if v is not None})
    return load_settings(config, **merged)


UrlOption = Annotated[str | None, typer.Option("--url", help="Gateway URL (default http://HOST:PORT).")]
KeyOption = Annotated[str | None, typer.Option("--admin-key", help="Admin API key (default: server.admin_keys_env).")]


def admin_client(settings: Settings, url: str | None, key: str | None) -> httpx.Client:
    """An HTTP client for the gateway's admin API: ``url`` (default http://HOST:PORT from
    ``[server]``) and ``key`` (default the first key in ``server.admin_keys_env``)."""
    key = key or (resolve_secret(settings.server.admin_keys_env) or "").split(",")[0].strip() or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def admin_call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One admin call; gateway errors become SovereignErrors (the CLI prints them, exit 1)."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise EngineUnavailableError(
            f"No gateway answers at {client.base_url} ({type(exc).__name__}); start `sovereign serve` or pass --url."
        ) from exc
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code == 404:
        raise NotFoundError(body.get("error", {}).get("message", f"{path} not found"))
    if response.status_code >= 400:
        raise SovereignError(body.get("error", {}).get("message", f"HTTP {response.status_code}"))
    return body


UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(text: str) -> float:
    """``"300"``, ``"300s"``, ``"5m"``, ``"1.5h"``, ``"30d"``, ``"250ms"`` as seconds.

    Raises:
        InvalidRequestError: not a number with an optional unit (ms, s, m, h, d).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
    if match is None:
        raise InvalidRequestError(f"{text!r} is not a duration; write e.g. 30s, 5m, 1h or 30d.")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]
