"""``sovereign models``: list the models this configuration serves (read from it; no engine is contacted)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.config import Settings


def model_rows(settings: Settings) -> list[tuple[str, str, str]]:
    """``(model, kind, engine)`` rows for the public names the configuration defines.

    The embedded chat and embedding models, each ``[[backends.deployments]]`` route (replacing the
    embedded model when it reuses its name) with its deployments in fallback order, the aliases, and
    the switchable ``backends.default_model``. Nothing is loaded or contacted. The pipeline models
    the plugins add at start-up (``sovereign-rag``, ``sovereign-agent``) are listed by
    ``GET /v1/models`` of a running gateway.

    Raises:
        ConfigError: an invalid ``[backends]`` section (as ``sovereign serve`` would report it).
    """
    from sovereign.backends.routing_table import validate_backends
    from sovereign.server.app import EMBEDDING_ALIASES, build_registry

    cfg = settings.backends
    embedded = settings.engine.model_name
    plan = validate_backends(cfg, embedded)
    engines = {d.name: d.engine for d in cfg.deployments}
    routes = {model: "route: " + ", ".join(f"{n} ({engines[n]})" for n in names) for model, names in plan.items()}
    registry = build_registry(settings, embedding=False)  # no ONNX session just to print names
    chat: list[tuple[str, str, str]] = []
    for info in registry.models():
        engine = routes.pop(info.id) if info.id in routes else registry.chat(info.id).capabilities.engine
        chat.append((info.id, "chat", engine))
    name = settings.embeddings.model_name
    embedding = [(name, "embedding", "onnxruntime (MiniLM int8)")]
    embedding += [(alias, "embedding", f"alias of {name}") for alias in EMBEDDING_ALIASES]
    chat += [(model, "chat", engine) for model, engine in routes.items()]
    chat += [(alias, "chat", f"alias of {target}") for alias, target in cfg.aliases.items()]
    chat.append((cfg.default_model, "chat", f"switchable route -> {cfg.default_route or embedded}"))
    return chat + embedding


def models(config: ConfigOption = None) -> None:
    """List public model names (embedded, configured routes, aliases), their kind and engine."""
    table = Table(title="Models")
    for column in ("model", "kind", "engine"):
        table.add_column(column)
    for row in model_rows(settings_from(config)):
        table.add_row(*row)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
