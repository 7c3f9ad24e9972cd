"""``sovereign backup DEST`` and ``sovereign restore SRC DATA_DIR``: consistent snapshots of data_dir."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the commands to ``app`` (filled in by the feature's module)."""
