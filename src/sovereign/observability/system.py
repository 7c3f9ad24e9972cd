"""Host resources the alert rules need, sampled by the gateway itself: GPU memory and data disk.

GPU memory comes from NVML (``nvidia-ml-py``); NVML reports device-wide usage, so it covers an
engine in another process or container on the same GPU (vLLM, Ollama) as well as the embedded
llama.cpp. Without a GPU or driver the GPU families stay empty and nothing fails. Disk space is
measured on the filesystem that holds ``data_dir`` (SQLite databases, indexes, caches).

Sampling runs in a background task every ``observability.system_metrics_interval_s`` seconds,
so values are plain gauges and aggregate correctly across uvicorn workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from sovereign.observability import metrics

log = logging.getLogger("sovereign.observability")


class GpuProbe:
    """NVML device memory; :meth:`sample` returns ``[(index, used_bytes, total_bytes)]`` or ``[]``."""

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # no driver, no GPU, no library: GPU families stay empty
            log.debug("NVML unavailable, no GPU metrics: %s", exc)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def sample(self) -> list[tuple[int, int, int]]:
        if self._nvml is None:
            return []
        nvml = self._nvml
        rows = []
        for index in range(nvml.nvmlDeviceGetCount()):
            info = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index))
            rows.append((index, int(info.used), int(info.total)))
        return rows

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def sample_once(gpu: GpuProbe, data_dir: Path) -> None:
    """Update the GPU memory and data-volume gauges once."""
    for index, used, total in gpu.sample():
        metrics.GPU_MEMORY_USED.labels(gpu=str(index)).set(used)
        metrics.GPU_MEMORY_TOTAL.labels(gpu=str(index)).set(total)
    path = data_dir
    while not path.exists() and path != path.parent:  # data_dir may not exist yet: measure its volume
        path = path.parent
    usage = psutil.disk_usage(str(path))
    metrics.DATA_VOLUME_FREE.set(usage.free)
    metrics.DATA_VOLUME_SIZE.set(usage.total)


def start_sampler(data_dir: Path, interval_s: float) -> Callable[[], Awaitable[None]]:
    """Sample now, then every ``interval_s`` seconds in a task; returns the async stop callable."""
    gpu = GpuProbe()
    sample_once(gpu, data_dir)

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(sample_once, gpu, data_dir)
            except Exception as exc:  # a failed sample must never stop the gateway
                log.warning("system metrics sample failed: %s", exc)

    task = asyncio.create_task(loop(), name="sovereign-system-metrics")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gpu.close()

    return stop
