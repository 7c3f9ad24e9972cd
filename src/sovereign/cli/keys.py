"""``sovereign keys create|list|revoke``: API keys (hashed), scopes, tenants and limits."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the commands to ``app`` (filled in by the feature's module)."""
