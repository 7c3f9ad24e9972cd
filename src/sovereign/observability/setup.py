"""Start and stop the gateway's observability: logs, traces and host metrics from ``settings.observability``.

Installs the JSON log handler (:func:`~sovereign.observability.logging.configure_logging`), the
OTLP/HTTP trace exporter when ``otlp_endpoint`` is set, and the GPU / disk sampler. The returned
``close`` stops the sampler, flushes pending spans, restores logging and, with several workers
(``PROMETHEUS_MULTIPROC_DIR``), marks this process dead so its live gauges leave the totals.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from sovereign.config import Settings
from sovereign.observability.logging import configure_logging
from sovereign.observability.system import start_sampler
from sovereign.observability.tracing import configure_tracing

log = logging.getLogger("sovereign.observability")


async def start_observability(settings: Settings) -> Callable[[], Awaitable[None]]:
    """Configure logs, traces and the host sampler; return the async ``close``."""
    observability = settings.observability
    restore_logging = configure_logging(observability)
    close_tracing = configure_tracing(observability)
    stop_sampler = start_sampler(settings.data_dir, observability.system_metrics_interval_s)
    log.info(
        "observability ready",
        extra={"tracing": bool(close_tracing), "capture_content": observability.capture_content},
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
