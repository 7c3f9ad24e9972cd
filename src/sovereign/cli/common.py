"""Options and helpers shared by command modules (settings loading with ``--config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sovereign.config import Settings, load_settings

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
