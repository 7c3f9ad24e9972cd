"""Optional features and the pip extras that install them (``pip install 'sovereign[pgvector]'``).

The core (``pip install sovereign``) serves chat and embeddings. Every other room's driver is an
extra; code that needs one calls :func:`require` before importing it, so a missing driver is a
clear error naming the extra instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.util

from sovereign.errors import MissingExtraError

EXTRAS: dict[str, str] = {
    "rag": "document memory with the embedded store (usearch)",
    "pdf": "PDF ingestion (pypdf)",
    "pgvector": "PostgreSQL + pgvector stores and conversation history (psycopg, pgvector)",
    "redis": "the Redis response-cache backend (redis-py)",
    "agents": "the sovereign-agent pipeline (LangGraph)",
    "otel": "OpenTelemetry traces (OTLP/HTTP exporter)",
    "gpu": "GPU metrics and the hardware doctor on NVIDIA (nvidia-ml-py)",
    "mlops": "drift detection (scipy), evaluation charts (matplotlib) and MLflow tracking (mlflow-skinny)",
}
"""Extra name -> what it enables (``all`` installs every one)."""


def installed(module: str) -> bool:
    """True when ``module`` (a top-level import name) can be imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, extra: str, feature: str) -> None:
    """Check that ``module`` is importable before a feature imports it.

    Raises:
        MissingExtraError: it is not; the message names ``feature`` and the pip command for ``extra``.
    """
    if not installed(module):
        raise MissingExtraError(
            f"{feature} needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'sovereign[{extra}]'.",
            extra=extra,
        )
