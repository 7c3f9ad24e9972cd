"""ASGI factory for ``uvicorn --factory --workers N`` in tests (settings from SOVEREIGN_* env)."""

from __future__ import annotations

from fastapi import FastAPI

from sovereign.config import load_settings
from sovereign.server.app import create_app


def create() -> FastAPI:
    """The gateway built from the environment, one per uvicorn worker process."""
    return create_app(load_settings())
