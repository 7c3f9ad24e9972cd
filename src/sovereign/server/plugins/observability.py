"""Start-up plugin: logs, traces and host metrics from ``settings.observability``.

Installs the JSON log handler (:func:`~sovereign.observability.logging.configure_logging`), the
OTLP/HTTP trace exporter when ``otlp_endpoint`` is set, and the GPU / disk sampler. The returned
``close`` stops the sampler, flushes pending spans, restores logging and, with several workers
(``PROMETHEUS_MULTIPROC_DIR``), marks this process dead so its live gauges leave the totals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from sovereign.observability.logging import configure_logging
from sovereign.observability.system import start_sampler
from sovereign.observability.tracing import configure_tracing
from sovereign.server.state import AppState

log = logging.getLogger("sovereign.observability")


ORDER = 0  # before every other plugin: their start-up logs are structured too


async def install(state: AppState) -> Callable[[], Awaitable[None]]:
    settings = state.settings.observability
    restore_logging = configure_logging(settings)
    close_tracing = configure_tracing(settings)
    stop_sampler = start_sampler(state.settings.data_dir, settings.system_metrics_interval_s)
    log.info(
        "observability ready",
        extra={"tracing": bool(close_tracing), "capture_content": settings.capture_content},
    )

    async def close() -> None:
        await stop_sampler()
        if close_tracing is not None:
            await close_tracing()
        restore_logging()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # prometheus-client's own switch, not a setting
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    return close
