"""A small catalog of NVIDIA GPUs for planning on hardware you do not have (``--gpu tesla-p4``).

Each row: memory (bytes, as NVML reports it: binary GiB), CUDA compute capability, peak memory
bandwidth (bytes/s) and the source of those numbers. Compute capabilities are from NVIDIA's table,
https://developer.nvidia.com/cuda-gpus; bandwidths from each product's datasheet. ``match`` are
lower-case substrings of the NVML device name, tried in order (so "4090 laptop" wins over "4090").
"""

from __future__ import annotations

from dataclasses import dataclass

from sovereign.errors import InvalidRequestError
from sovereign.hardware.sizes import GiB


@dataclass(frozen=True)
class GpuSpec:
    """A GPU model: memory (bytes), compute capability ("major.minor"), bandwidth (bytes/s), source."""

    key: str
    name: str
    match: tuple[str, ...]
    memory: int
    compute_capability: str
    bandwidth: float
    source: str


_GB = 1e9
CATALOG: tuple[GpuSpec, ...] = (
    GpuSpec("tesla-p4", "Tesla P4", ("tesla p4",), 8 * GiB, "6.1", 192 * _GB,
            "NVIDIA Tesla P4 datasheet (8 GB GDDR5, 192 GB/s); cc 6.1 per developer.nvidia.com/cuda-gpus"),
    GpuSpec("rtx-4090-laptop", "GeForce RTX 4090 Laptop GPU", ("4090 laptop",), 16 * GiB, "8.9", 576 * _GB,
            "NVIDIA RTX 40 laptop specs (16 GB GDDR6, 256-bit); 256 bit x 18 Gbps / 8 = 576 GB/s; cc 8.9 (Ada)"),
    GpuSpec("rtx-4090", "GeForce RTX 4090", ("rtx 4090",), 24 * GiB, "8.9", 1008 * _GB,
            "NVIDIA GeForce RTX 4090 specs (24 GB GDDR6X, 384-bit, 21 Gbps = 1008 GB/s)"),
    GpuSpec("rtx-3090", "GeForce RTX 3090", ("rtx 3090",), 24 * GiB, "8.6", 936 * _GB,
            "NVIDIA GeForce RTX 3090 specs (24 GB GDDR6X, 936 GB/s)"),
    GpuSpec("tesla-t4", "Tesla T4", ("tesla t4", " t4"), 16 * GiB, "7.5", 320 * _GB,
            "NVIDIA T4 datasheet (16 GB GDDR6, 320 GB/s)"),
    GpuSpec("v100", "Tesla V100", ("v100",), 16 * GiB, "7.0", 900 * _GB,
            "NVIDIA V100 datasheet (SXM2 16 GB HBM2, 900 GB/s)"),
    GpuSpec("l4", "NVIDIA L4", ("nvidia l4",), 24 * GiB, "8.9", 300 * _GB,
            "NVIDIA L4 datasheet (24 GB GDDR6, 300 GB/s)"),
    GpuSpec("a10", "NVIDIA A10", ("nvidia a10",), 24 * GiB, "8.6", 600 * _GB,
            "NVIDIA A10 datasheet (24 GB GDDR6, 600 GB/s)"),
    GpuSpec("a100-80gb", "A100 80GB SXM", ("a100-sxm4-80gb", "a100 80gb"), 80 * GiB, "8.0", 2039 * _GB,
            "NVIDIA A100 datasheet (80 GB HBM2e SXM, 2,039 GB/s)"),
    GpuSpec("a100-40gb", "A100 40GB", ("a100",), 40 * GiB, "8.0", 1555 * _GB,
            "NVIDIA A100 datasheet (40 GB HBM2, 1,555 GB/s)"),
    GpuSpec("h100-pcie", "H100 PCIe", ("h100 pcie",), 80 * GiB, "9.0", 2000 * _GB,
            "NVIDIA H100 datasheet (PCIe 80 GB HBM2e, 2 TB/s)"),
    GpuSpec("h100-sxm", "H100 SXM", ("h100",), 80 * GiB, "9.0", 3350 * _GB,
            "NVIDIA H100 datasheet (SXM 80 GB HBM3, 3.35 TB/s)"),
    GpuSpec("h200", "H200", ("h200",), 141 * 10**9, "9.0", 4800 * _GB,
            "NVIDIA H200 datasheet (141 GB HBM3e, 4.8 TB/s)"),
)


def find_spec(name: str) -> GpuSpec | None:
    """The catalog row for a catalog key (``tesla-p4``) or an NVML device name, else None."""
    text = name.strip().lower()
    for spec in CATALOG:
        if text == spec.key:
            return spec
    padded = f" {text}"
    for spec in CATALOG:
        if any(m in padded for m in spec.match):
            return spec
    return None


def catalog_bandwidth(name: str) -> float | None:
    """Datasheet bandwidth (bytes/s) for an NVML device name, or None when the GPU is not in the catalog."""
    spec = find_spec(name)
    return spec.bandwidth if spec else None


def require_spec(name: str) -> GpuSpec:
    """Like :func:`find_spec` but raises InvalidRequestError (param ``gpu``) listing the known keys."""
    spec = find_spec(name)
    if spec is None:
        keys = ", ".join(s.key for s in CATALOG)
        raise InvalidRequestError(
            f"gpu: unknown GPU {name!r}; use one of {keys}, or give --gpu-memory and --compute-capability.",
            param="gpu",
        )
    return spec
