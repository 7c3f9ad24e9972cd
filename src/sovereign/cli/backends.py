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

from sovereign.cli.common import ConfigOption, KeyOption, UrlOption, admin_call, admin_client, settings_from
from sovereign.config import Settings
from sovereign.errors import EngineUnavailableError, NotFoundError

backends_app = typer.Typer(help="Inspect and switch inference engines.", no_args_is_help=True)
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
    with admin_client(settings, url, admin_key) as client:
        try:
            status = admin_call(client, "POST", "/admin/backends/ping", json={})
            status = {**admin_call(client, "GET", "/admin/backends"), **status}
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
    with admin_client(settings, url, admin_key) as client:
        try:
            status = admin_call(client, "POST", "/admin/backends/ping", json={"name": name})
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
    with admin_client(settings, url, admin_key) as client:
        result = admin_call(client, "PUT", "/admin/backends/default", json={"route": name})
    Console().print(f"default route: {result['previous']} -> [bold]{result['default_route']}[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(backends_app, name="backends")
