"""The doctor's report: host facts plus the engine verdicts, as one JSON-ready dict.

Shared by ``sovereign doctor`` and ``GET /v1/system`` so both say the same thing.
"""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import Any

from sovereign.hardware.detect import HostReport, detect
from sovereign.hardware.engines import evaluate

_GPU_BACKENDS = ("ggml-cuda", "ggml-vulkan", "ggml-metal", "ggml-hip", "ggml-sycl")


def llamacpp_gpu_backends() -> list[str]:
    """GPU backends compiled into the installed llama-cpp-python, read from its shared libraries
    (``llama_cpp/lib/libggml-<backend>.so``) without importing it; [] for a CPU-only build."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return []
    lib = Path(spec.origin).parent / "lib"
    names = {p.name for p in lib.glob("*")} if lib.is_dir() else set()
    return [b.removeprefix("ggml-") for b in _GPU_BACKENDS if any(b in n for n in names)]


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
        "llamacpp_gpu_backends": backends,
        "engines": [v.to_dict() for v in verdicts],
    }
