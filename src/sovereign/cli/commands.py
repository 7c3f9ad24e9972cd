"""The built-in CLI commands, registered through ``register_commands`` like a plugin's.

Each module listed here exposes ``register(app: typer.Typer) -> None`` adding its command or group.
"""

from __future__ import annotations

import importlib

import typer

from sovereign.hookspecs import hookimpl

MODULES = ("agent", "ask", "backends", "backup", "cache", "chat", "doctor", "drift", "evaluate", "flags", "ingest",
           "keys", "migrate_store", "models", "plan", "rollout", "search", "serve")


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    """Every built-in command group, in :data:`MODULES` order."""
    for name in MODULES:
        importlib.import_module(f"sovereign.cli.{name}").register(cli)
