"""``sovereign backends list|ping|use NAME``: engine health, latency, breakers and the default route.

The commands talk to a running gateway's admin API (``--url``, default from ``[server]``; the admin
key comes from ``--admin-key`` or the first key in ``server.admin_keys_env``). ``list`` and ``ping``
fall back to probing the configured deployments directly when no gateway answers (breaker state
is then unknown). Exit code 1 with a one-line message on any error (unknown name: 404 from the
gateway; no gateway for ``use``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.config import Settings, resolve_secret
from sovereign.errors import EngineUnavailableError, NotFoundError, SovereignError

backends_app = typer.Typer(help="Inspect and switch inference engines.", no_args_is_help=True)
UrlOption = Annotated[str | None, typer.Option("--url", help="Gateway URL (default http://HOST:PORT).")]
KeyOption = Annotated[str | None, typer.Option("--admin-key", help="Admin API key (default: server.admin_keys_env).")]


def _client(settings: Settings, url: str | None, key: str | None) -> httpx.Client:
    key = key or (resolve_secret(settings.server.admin_keys_env) or "").split(",")[0].strip() or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
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


async def _probe_locally(settings: Settings, name: str | None) -> dict[str, Any]:
    from sovereign.backends.registry import ModelRegistry
    from sovereign.backends.routing_table import build_deployments, validate_backends

    validate_backends(settings.backends, settings.engine.model_name)
    chosen = [d for d in settings.backends.deployments if d.engine != "embedded" and name in (None, d.name)]
    if name is not None and not chosen:
        raise NotFoundError(f"No remote deployment named {name!r} in the configuration.")
    async with httpx.AsyncClient() as client:
        deployments = build_deployments(
            settings.model_copy(update={"backends": settings.backends.model_copy(update={"deployments": chosen})}),
            ModelRegistry(),
            client,
        )
        await asyncio.gather(*(d.probe() for d in deployments.values()))
    return {
        "default_route": settings.backends.default_route or settings.engine.model_name,
        "gateway": False,
        "deployments": [{**d.status(), "breaker": "unknown"} for d in deployments.values()],
    }


def _show(status: dict[str, Any]) -> None:
    table = Table(title=f"Deployments (default route: {status.get('default_route')})")
    for column in ("name", "engine", "up", "latency ms", "breaker", "window", "weight", "last error"):
        table.add_column(column)
    for d in status.get("deployments", []):
        up = {True: "[green]up[/]", False: "[red]down[/]", None: "?"}[d["up"]]
        table.add_row(
            d["name"],
            d["engine"],
            up,
            str(d["latency_ms"] or "-"),
            d["breaker"],
            str(d["context_window"]),
            str(d["weight"]),
            d["last_error"] or "",
        )
    Console().print(table)


@backends_app.command("list")
def list_backends(config: ConfigOption = None, url: UrlOption = None, admin_key: KeyOption = None) -> None:
    """Show every deployment's health, latency and breaker state, and the default route."""
    settings = settings_from(config)
    with _client(settings, url, admin_key) as client:
        try:
            status = _call(client, "POST", "/admin/backends/ping", json={})
            status = {**_call(client, "GET", "/admin/backends"), **status}
        except EngineUnavailableError:
            status = asyncio.run(_probe_locally(settings, None))
    _show(status)


@backends_app.command("ping")
def ping(
    name: Annotated[str | None, typer.Argument(help="Deployment to probe (default: all).")] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Probe deployments now and show health and latency."""
    settings = settings_from(config)
    with _client(settings, url, admin_key) as client:
        try:
            status = _call(client, "POST", "/admin/backends/ping", json={"name": name})
        except EngineUnavailableError:
            status = asyncio.run(_probe_locally(settings, name))
    _show(status)
    if any(d["up"] is False for d in status["deployments"]):
        raise typer.Exit(2)


@backends_app.command("use")
def use(
    name: Annotated[str, typer.Argument(help="Model or deployment name for the default route.")],
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Switch the running gateway's default route to NAME (no restart; next request uses it)."""
    settings = settings_from(config)
    with _client(settings, url, admin_key) as client:
        result = _call(client, "PUT", "/admin/backends/default", json={"route": name})
    Console().print(f"default route: {result['previous']} -> [bold]{result['default_route']}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(backends_app, name="backends")
