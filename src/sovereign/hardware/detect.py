"""What this host has: CPU, RAM, instruction sets, NVIDIA GPUs (NVML) and disks.

Sources:
- CPU flags: ``/proc/cpuinfo`` (Linux ``flags`` line on x86, ``Features`` on ARM; ``asimd`` is NEON).
- Cores and memory: ``psutil`` (``cpu_count``, ``virtual_memory``, ``disk_usage``).
- GPUs: NVML through nvidia-ml-py (``nvmlDeviceGetName``, ``nvmlDeviceGetCudaComputeCapability``,
  ``nvmlDeviceGetMemoryInfo``, ``nvmlSystemGetDriverVersion``, ``nvmlSystemGetCudaDriverVersion``,
  ``nvmlDeviceGetMemoryBusWidth``, ``nvmlDeviceGetMaxClockInfo``), see
  https://docs.nvidia.com/deploy/nvml-api/. A host without the NVIDIA driver has no NVML library;
  that is reported as "no NVIDIA GPU", never as an error.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sovereign.hardware.gpus import catalog_bandwidth

# Instruction-set extensions llama.cpp's CPU backend (ggml-cpu) has kernels for; /proc/cpuinfo names.
# Source: ggml/src/ggml-cpu/CMakeLists.txt options GGML_AVX, GGML_AVX2, GGML_AVX512, GGML_AVX512_VNNI,
# GGML_AVX512_BF16, GGML_FMA, GGML_F16C, GGML_AVX_VNNI, GGML_AMX_*; ARM: NEON (asimd), dotprod, SVE.
RELEVANT_FLAGS = (
    "sse3", "ssse3", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "i8mm",
)


@dataclass
class CpuInfo:
    """The CPU. ``flags`` holds only :data:`RELEVANT_FLAGS` present on this CPU."""

    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    flags: list[str]
    avx2: bool
    avx512: bool
    neon: bool


@dataclass
class GpuInfo:
    """One NVIDIA GPU as NVML reports it. Memory in bytes; bandwidth in bytes/s (None when unknown)."""

    index: int
    name: str
    compute_capability: str
    memory_total: int
    memory_free: int
    bandwidth: float | None = None
    bandwidth_source: str | None = None
    uuid: str | None = None

    @property
    def cc(self) -> tuple[int, int]:
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


@dataclass
class DiskInfo:
    """A mounted filesystem: total and free bytes."""

    mountpoint: str
    total: int
    free: int


@dataclass
class HostReport:
    """Everything :func:`detect` found. ``nvml_error`` says why no GPU list could be read."""

    os: str
    cpu: CpuInfo
    ram_total: int
    ram_available: int
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    nvml_error: str | None = None
    disks: list[DiskInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpu_summary"] = self.gpu_summary
        return data

    @property
    def gpu_summary(self) -> str:
        if self.gpus:
            return ", ".join(
                f"{g.name} (cc {g.compute_capability}, {g.memory_total / 1024**3:.1f} GiB)" for g in self.gpus
            )
        return f"No NVIDIA GPU found ({self.nvml_error or 'NVML reports 0 devices'}); engines run on the CPU."


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(model name, set of flags) from /proc/cpuinfo; empty on non-Linux hosts."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def detect_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU model, core counts and the instruction sets that matter to llama.cpp."""
    model, flags = _cpuinfo(cpuinfo)
    arch = platform.machine()
    neon = "asimd" in flags or "neon" in flags or arch in ("arm64", "aarch64")
    return CpuInfo(
        model=model,
        arch=arch,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        flags=[f for f in RELEVANT_FLAGS if f in flags],
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        neon=neon,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def detect_gpus() -> tuple[list[GpuInfo], str | None, str | None, str | None]:
    """``(gpus, driver_version, cuda_version, error)`` from NVML; ``error`` set when NVML is unusable.

    Bandwidth: the catalog value for a known GPU name (:mod:`~sovereign.hardware.gpus`), otherwise
    bus width (bits) / 8 x maximum memory clock (Hz) x 2 (double data rate), which matches the
    datasheet figure for HBM and GDDR6/6X as NVML reports their clocks.
    """
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], None, None, f"NVML unavailable: {exc}"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda_int = int(pynvml.nvmlSystemGetCudaDriverVersion())
        cuda = f"{cuda_int // 1000}.{(cuda_int % 1000) // 10}"
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            bandwidth = catalog_bandwidth(name)
            source: str | None = "catalog (datasheet)"
            if bandwidth is None:
                try:
                    bus = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
                    clock = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
                    bandwidth, source = bus / 8 * clock * 1e6 * 2, "NVML bus width x memory clock x 2"
                except pynvml.NVMLError:
                    bandwidth, source = None, None
            gpus.append(GpuInfo(
                index=i, name=name, compute_capability=f"{major}.{minor}", memory_total=int(mem.total),
                memory_free=int(mem.free), bandwidth=bandwidth, bandwidth_source=source,
                uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
            ))
        return gpus, driver, cuda, None
    except pynvml.NVMLError as exc:
        return [], None, None, f"NVML error: {exc}"
    finally:
        pynvml.nvmlShutdown()


def detect_disks() -> list[DiskInfo]:
    """Physical filesystems (psutil ``disk_partitions(all=False)``), plus the data directory's."""
    disks, seen = [], set()
    for part in psutil.disk_partitions(all=False):
        if part.mountpoint in seen:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        seen.add(part.mountpoint)
        disks.append(DiskInfo(part.mountpoint, int(usage.total), int(usage.free)))
    if not disks:
        usage = psutil.disk_usage(os.getcwd())
        disks.append(DiskInfo(os.getcwd(), int(usage.total), int(usage.free)))
    return disks


def detect() -> HostReport:
    """Probe this host. Never raises for missing hardware: an absent GPU is a fact in the report."""
    gpus, driver, cuda, error = detect_gpus()
    mem = psutil.virtual_memory()
    return HostReport(
        os=f"{platform.system()} {platform.release()}",
        cpu=detect_cpu(),
        ram_total=int(mem.total),
        ram_available=int(mem.available),
        gpus=gpus,
        driver_version=driver,
        cuda_version=cuda,
        nvml_error=error,
        disks=detect_disks(),
    )
