"""Which inference engines can run here, from a compatibility table whose every row cites its source.

A row states one engine's hard requirement (operating system, accelerator, minimum CUDA compute
capability). :func:`evaluate` applies the rows to a host (or to a GPU you only plan for) and returns
one verdict per engine with the reason when it cannot run. The rows hold requirements the vendors
document; they do not guess performance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class EngineRule:
    """One engine's requirements.

    Attributes:
        key: engine id used by the planner (``vllm``, ``llamacpp`` ...).
        name: display name.
        gpu_required: True when the engine only serves LLMs on an NVIDIA GPU (in its supported builds).
        min_cc: minimum CUDA compute capability ``(major, minor)`` for its GPU path; None = any.
        linux_only: the engine (GPU path) is supported on Linux only.
        source: where the requirement is documented.
    """

    key: str
    name: str
    gpu_required: bool
    min_cc: tuple[int, int] | None
    linux_only: bool
    source: str


RULES: tuple[EngineRule, ...] = (
    EngineRule(
        "llamacpp", "llama.cpp (embedded llama-server)", False, (5, 0), False,
        "llama.cpp README 'Supported backends' (CPU: x86 AVX/AVX2/AVX-512/AMX, ARM NEON; CUDA); "
        "ggml/src/ggml-cuda/CMakeLists.txt default CUDA architectures start at 50 (cc 5.0)",
    ),
    EngineRule(
        "vllm", "vLLM", True, (7, 0), True,
        "docs.vllm.ai getting_started/installation/gpu: 'OS: Linux', 'GPU: compute capability 7.0 or "
        "higher (e.g., V100, T4, RTX20xx, A100, L4, H100, etc.)'",
    ),
    EngineRule(
        "sglang", "SGLang", True, (7, 5), True,
        "docs.sglang.io get-started/quickstart: 'GPU: NVIDIA GPU with CUDA support (sm75 and above, e.g., "
        "T4, A10, A100, L4, L40S, H100)', 'OS: Linux'",
    ),
    EngineRule(
        "ollama", "Ollama", False, (5, 0), False,
        "docs.ollama.com/gpu: 'Ollama supports Nvidia GPUs with compute capability 5.0+'; CPU-only runs "
        "are supported on every platform",
    ),
    EngineRule(
        "tgi", "Hugging Face TGI", True, (7, 5), True,
        "huggingface.co/docs/text-generation-inference 'Supported hardware': optimized models on NVIDIA "
        "H100, A100, A10G and T4 (cc 7.5 is the oldest listed) with CUDA 12.2+, Docker on Linux",
    ),
    EngineRule(
        "triton", "Triton + TensorRT-LLM", True, (8, 0), True,
        "nvidia.github.io/TensorRT-LLM supported-hardware: Blackwell, Hopper, Ada Lovelace, Ampere (A100); "
        "support matrix: 'TensorRT-LLM requires Linux x86_64 or Linux aarch64'",
    ),
)


@dataclass
class EngineVerdict:
    """Whether one engine can run, on what, and why not."""

    engine: str
    name: str
    runnable: bool
    device: str | None
    reason: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_cc(text: str) -> tuple[int, int]:
    """``"6.1"`` -> ``(6, 1)``. Raises ValueError on anything else."""
    major, _, minor = text.strip().partition(".")
    return int(major), int(minor or 0)


def _verdict(rule: EngineRule, system: str, gpu: tuple[str, str] | None, cpu_gpu_offload: bool) -> EngineVerdict:
    def out(runnable: bool, device: str | None, reason: str) -> EngineVerdict:
        return EngineVerdict(rule.key, rule.name, runnable, device, reason, rule.source)

    if rule.linux_only and system != "Linux":
        return out(False, None, f"{rule.name} is supported on Linux only; this host runs {system}.")
    if gpu is not None:
        name, cc_text = gpu
        cc = parse_cc(cc_text)
        if rule.min_cc is None or cc >= rule.min_cc:
            if rule.key == "llamacpp" and not cpu_gpu_offload:
                return out(True, "cpu", f"{name} qualifies, but this llama-server build has no GPU "
                                        "backend (rebuild with -DGGML_CUDA=ON); runs on the CPU.")
            return out(True, "gpu", f"{name} (cc {cc_text}) meets cc >= {rule.min_cc[0]}.{rule.min_cc[1]}."
                       if rule.min_cc else f"{name} is supported.")
        need = f"{rule.min_cc[0]}.{rule.min_cc[1]}"
        if not rule.gpu_required:
            return out(True, "cpu", f"{name} has compute capability {cc_text} < {need}: GPU path unsupported; "
                                    "runs on the CPU only.")
        return out(False, None, f"{name} has compute capability {cc_text}; {rule.name} needs {need} or newer.")
    if rule.gpu_required:
        return out(False, None, f"No NVIDIA GPU: {rule.name} needs one (compute capability "
                                f"{rule.min_cc[0] if rule.min_cc else 0}.{rule.min_cc[1] if rule.min_cc else 0}+).")
    return out(True, "cpu", "Runs on the CPU (no NVIDIA GPU found).")


def evaluate(
    *, system: str, gpu: tuple[str, str] | None, cpu_gpu_offload: bool = True
) -> list[EngineVerdict]:
    """One verdict per :data:`RULES` row.

    Args:
        system: ``platform.system()`` value (``"Linux"``, ``"Darwin"``, ``"Windows"``).
        gpu: ``(name, compute capability "major.minor")`` of the best GPU, or None for none.
        cpu_gpu_offload: whether the embedded llama.cpp build can offload to a GPU
            (``llama-server --list-devices`` lists a GPU).
    """
    return [_verdict(rule, system, gpu, cpu_gpu_offload) for rule in RULES]


def rule(key: str) -> EngineRule:
    """The row for ``key``; KeyError when unknown."""
    for r in RULES:
        if r.key == key:
            return r
    raise KeyError(key)
