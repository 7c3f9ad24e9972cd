"""ASGI factory for process managers: ``uvicorn sovereign.server.asgi:create --factory --workers N``.

Each worker process builds its own gateway from the environment (``SOVEREIGN_*`` variables and
``SOVEREIGN_CONFIG``); ``sovereign serve --workers N`` uses this. Metrics of all workers are merged
when ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

from fastapi import FastAPI

from sovereign.config import load_settings
from sovereign.server.app import create_app


def create() -> FastAPI:
    """The gateway built from the environment, one per worker process."""
    return create_app(load_settings())
