"""The doctor's report: host facts plus the engine verdicts, as one JSON-ready dict.

Shared by ``sovereign doctor`` and ``GET /v1/system`` so both say the same thing.
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from sovereign.backends.llama_process import find_binary
from sovereign.errors import EngineUnavailableError
from sovereign.hardware.detect import HostReport, detect
from sovereign.hardware.engines import evaluate

_DEVICE_LINE = re.compile(r"^\s+([A-Za-z]+)\d+:", re.MULTILINE)


@functools.cache
def llamacpp_gpu_backends(binary: Path | None = None) -> tuple[str, ...]:
    """GPU backends of the embedded engine's build (``cuda``, ``vulkan``, ``metal``...), read from
    ``llama-server --list-devices`` (lines like ``  CUDA0: NVIDIA ... (24 GiB, 23 GiB free)``);
    () for a CPU-only build or when no llama-server is installed. Asked once per process (a build's
    backends do not change while it runs), not on every ``GET /v1/system``."""
    try:
        path = find_binary(binary)
        listing = subprocess.run([str(path), "--list-devices"], capture_output=True, text=True, timeout=30).stdout
    except (EngineUnavailableError, OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(sorted({name.lower() for name in _DEVICE_LINE.findall(listing)} - {"cpu"}))


def system_report(host: HostReport | None = None) -> dict[str, Any]:
    """``{"host": ..., "gpu_summary": str, "llamacpp_gpu_backends": [...], "engines": [...]}``."""
    host = host or detect()
    best = max(host.gpus, key=lambda g: (g.cc, g.memory_total), default=None)
    backends = llamacpp_gpu_backends()
    verdicts = evaluate(
        system=platform.system(),
        gpu=(best.name, best.compute_capability) if best else None,
        cpu_gpu_offload=bool(backends),
    )
    return {
        "host": host.to_dict(),
        "gpu_summary": host.gpu_summary,
        "llamacpp_gpu_backends": list(backends),
        "engines": [v.to_dict() for v in verdicts],
    }
