"""``sovereign flags list|get|set|check``: feature flags of a running gateway, and a file check.

``list``, ``get`` and ``set`` use the admin API (``--url``, ``--admin-key``); ``check FILE`` loads
a flags file locally (TOML, or JSON in the seed's ``feature-flags.json`` shape) and exits 1 with
the reason when it is invalid (cycle, unknown dependency, bad value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, KeyOption, UrlOption, admin_call, admin_client, settings_from
from sovereign.errors import InvalidRequestError
from sovereign.flags.model import load_flags_file

flags_app = typer.Typer(help="Feature flags.", no_args_is_help=True)
NameArgument = Annotated[str, typer.Argument(help="Flag name.")]


def _table(flags: list[dict[str, Any]]) -> Table:
    table = Table(title="Feature flags")
    table.add_column("flag", no_wrap=True)
    for column in ("kind", "enabled", "percentage", "variants", "depends on", "rules", "description"):
        table.add_column(column)
    for f in flags:
        table.add_row(f["name"], f["kind"], "on" if f["enabled"] else "[red]off[/]", f"{f['percentage']:g}",
                      ", ".join(f"{k}={v:g}" for k, v in f["variants"].items()), ", ".join(f["depends_on"]),
                      str(len(f["rules"])), f["description"])
    return table


@flags_app.command("list")
def list_flags(config: ConfigOption = None, url: UrlOption = None, admin_key: KeyOption = None) -> None:
    """Every flag of the running gateway, with run-time values and rollouts applied."""
    with admin_client(settings_from(config), url, admin_key) as client:
        Console().print(_table(admin_call(client, "GET", "/admin/flags")["data"]))


@flags_app.command("get")
def get_flag(name: NameArgument, config: ConfigOption = None, url: UrlOption = None,
             admin_key: KeyOption = None) -> None:
    """One flag and its latest changes."""
    with admin_client(settings_from(config), url, admin_key) as client:
        flag = admin_call(client, "GET", f"/admin/flags/{name}")
    console = Console()
    console.print(_table([flag]))
    for event in flag.get("events", []):
        console.print(f"  {event['actor']} {event['kind']}: {event['detail']}")


@flags_app.command("set")
def set_flag(
    name: NameArgument,
    on: Annotated[bool | None, typer.Option("--on/--off", help="Turn the flag on or off.")] = None,
    percentage: Annotated[float | None, typer.Option("--percentage", min=0, max=100,
                                                     help="Share of subjects (makes it a percentage flag).")] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    admin_key: KeyOption = None,
) -> None:
    """Change a flag at run time (persisted; every worker applies it within flags.sync_s)."""
    change: dict[str, Any] = {}
    if on is not None:
        change["enabled"] = on
    if percentage is not None:
        change.update(kind="percentage", percentage=percentage)
    if not change:
        raise InvalidRequestError("Nothing to set: pass --on, --off or --percentage.")
    with admin_client(settings_from(config), url, admin_key) as client:
        flag = admin_call(client, "PUT", f"/admin/flags/{name}", json=change)
    Console().print(_table([flag]))


@flags_app.command("check")
def check(path: Annotated[Path, typer.Argument(help="Flags file (.toml or .json).")]) -> None:
    """Validate a flags file: shape, values, dependencies (unknown or cyclic)."""
    flags = load_flags_file(path)
    Console().print(f"{path}: {len(flags)} flags OK ({', '.join(flags)})")


def register(app: typer.Typer) -> None:
    app.add_typer(flags_app, name="flags")
