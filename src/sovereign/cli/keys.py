"""``sovereign keys create|list|revoke``: API keys (only a hash is stored), scopes, tenants, limits.

The commands work on the control database directly (``data_dir/control.sqlite3`` or PostgreSQL at
``flags.store_dsn_env``), with or without a running gateway; a running gateway sees a new or
revoked key within ``security.key_cache_s``. ``create`` prints the key once: it cannot be shown
again. Errors (bad limits, unknown id): one line, exit 1.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, seconds, settings_from
from sovereign.config import Settings, resolve_secret
from sovereign.flags.store import open_control_store
from sovereign.security.keys import KeyRing, server_secret

keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
T = TypeVar("T")


def _with_ring(settings: Settings, work: Callable[[KeyRing], Awaitable[T]]) -> T:
    async def run() -> T:
        dsn = resolve_secret(settings.flags.store_dsn_env) if settings.flags.store_dsn_env else None
        store = await open_control_store(settings.data_dir / "control.sqlite3", dsn)
        try:
            return await work(KeyRing(store, server_secret(settings.data_dir, settings.security.secret_env)))
        finally:
            await store.close()

    return asyncio.run(run())


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    scope: Annotated[Literal["user", "admin"], typer.Option("--scope", help="user: the API; admin: also /admin.")]
    = "user",
    tenant: Annotated[str | None, typer.Option("--tenant", help="Whose data it sees (default: the name).")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute (default: unlimited).")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute (default: unlimited).")] = None,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated models it may use.")] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime, e.g. 30d or 12h.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once."""
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    lifetime = seconds(expires) if expires else None
    plaintext, row = _with_ring(settings_from(config), lambda ring: ring.create(
        name, scope=scope, tenant=tenant, rpm=rpm, tpm=tpm, models=allowed, expires_in_s=lifetime))
    console = Console()
    console.print(f"key [bold]{row['id']}[/] ({row['scope']}, tenant {row['tenant']}) created. "
                  "Store it now: it is not shown again.")
    print(plaintext)


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


@keys_app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Every key (never the secret): id, name, scope, tenant, limits, expiry, revocation."""
    rows: list[dict[str, Any]] = _with_ring(settings_from(config), lambda ring: ring.list())
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="API keys")
    for column in ("id", "name", "scope", "tenant", "rpm", "tpm", "models", "created", "expires", "revoked"):
        table.add_column(column, no_wrap=column == "id")
    for r in rows:
        table.add_row(r["id"], r["name"], r["scope"], r["tenant"], str(r["rpm"] or "-"), str(r["tpm"] or "-"),
                      ", ".join(r["models"] or []) or "all", _when(r["created_at"]), _when(r["expires_at"]),
                      _when(r["revoked_at"]))
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (keys list).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: refused by every gateway within security.key_cache_s."""
    _with_ring(settings_from(config), lambda ring: ring.revoke(key_id))
    Console().print(f"key {key_id} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
