"""``sovereign cache stats|clear``: inspect or empty the response cache of this configuration."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.config import Settings

cache_app = typer.Typer(help="Inspect or empty the response cache.", no_args_is_help=True)


async def _with_backend(settings: Settings, action: str) -> Any:
    from sovereign.cache.backends import build_backend

    backend = build_backend(settings)
    await backend.open()
    try:
        return await (backend.stats() if action == "stats" else backend.clear())
    finally:
        await backend.close()


@cache_app.command("stats")
def stats(
    config: ConfigOption = None, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Entries, live entries, scopes, size and limits of the configured cache backend."""
    settings = settings_from(config)
    out = asyncio.run(_with_backend(settings, "stats"))
    out.update(similarity_threshold=settings.cache.similarity_threshold, ttl_s=settings.cache.ttl_s)
    if as_json:
        typer.echo(json.dumps(out))
        return
    table = Table(title="Response cache")
    table.add_column("field")
    table.add_column("value")
    for name, value in out.items():
        table.add_row(name, str(value))
    Console().print(table)


@cache_app.command("clear")
def clear(
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every cached response (all tenants and models)."""
    settings = settings_from(config)
    if not yes:
        typer.confirm(f"Delete every cached response in the {settings.cache.backend} cache?", abort=True)
    n = asyncio.run(_with_backend(settings, "clear"))
    typer.echo(f"Cleared {n} entries.")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
