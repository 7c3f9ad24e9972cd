"""``sovereign models``: list the models this configuration serves."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, settings_from


def models(config: ConfigOption = None) -> None:
    """List public model names, their kind and engine."""
    from sovereign.server.app import build_registry

    registry = build_registry(settings_from(config))
    table = Table(title="Models")
    for column in ("model", "kind", "engine"):
        table.add_column(column)
    for info in registry.models():
        engine = (
            registry.chat(info.id).capabilities.engine if info.kind == "chat" else "onnxruntime (MiniLM int8)"
        )
        table.add_row(info.id, info.kind, engine)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
