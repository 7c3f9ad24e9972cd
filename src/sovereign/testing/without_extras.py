"""Run Sovereign as a core-only install would: importing this module hides every extra's driver.

``python -c "from sovereign.testing.without_extras import hide_all; hide_all(); ..."`` makes
``import usearch`` (and the other drivers in :data:`EXTRA_MODULES`) raise ``ModuleNotFoundError``
and ``importlib.util.find_spec`` return None for them, exactly as when the extra is not installed,
without a second virtual environment. Importing this module hides nothing by itself.
"""

from __future__ import annotations

import sys

EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "rag": ("usearch", "selectolax"),
    "pdf": ("pypdf",),
    "pgvector": ("psycopg", "psycopg_pool", "pgvector"),
    "redis": ("redis",),
    "agents": ("langgraph",),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter"),
    "gpu": ("pynvml",),
    "mlops": ("scipy", "matplotlib", "mlflow", "py3langid"),
}


def hide(extras: list[str]) -> None:
    """Hide the driver modules of ``extras`` from this interpreter (a None entry in ``sys.modules``
    is Python's documented way to make an import fail)."""
    for extra in extras:
        for module in EXTRA_MODULES[extra]:
            sys.modules[module] = None  # type: ignore[assignment]


def hide_all(keep: tuple[str, ...] = ()) -> None:
    """Hide every extra's drivers except those of ``keep``."""
    hide([e for e in EXTRA_MODULES if e not in keep])
