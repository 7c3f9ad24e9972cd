"""Engine command lines that implement a plan.

Flag names and meanings:
- vLLM (docs.vllm.ai, "Engine Arguments"): ``--max-model-len`` (context per sequence),
  ``--max-num-seqs`` (sequences per step), ``--gpu-memory-utilization`` (fraction of GPU memory for
  weights + activations + KV cache), ``--kv-cache-dtype {auto,fp8}``, ``--quantization fp8``,
  ``--dtype half`` (bfloat16 needs compute capability 8.0), ``--hf-overrides`` (config overrides,
  used for YaRN rope scaling).
- SGLang (docs.sglang.io, "Server Arguments"): ``--context-length``, ``--max-running-requests``,
  ``--mem-fraction-static`` (fraction for weights + KV pool), ``--kv-cache-dtype {auto,fp8_e4m3}``,
  ``--json-model-override-args``.
- llama.cpp ``llama-server`` (tools/server/README.md): ``-c`` total context of all slots (each of
  ``--parallel N`` slots gets ``c / N``), ``-ngl`` layers on the GPU, ``-fa on`` flash attention
  (required for a quantized V cache), ``--cache-type-k/-v``, ``--rope-scaling yarn --rope-scale F
  --yarn-orig-ctx N``.
- Ollama (docs.ollama.com faq): ``OLLAMA_NUM_PARALLEL``, ``OLLAMA_CONTEXT_LENGTH``,
  ``OLLAMA_FLASH_ATTENTION=1``, ``OLLAMA_KV_CACHE_TYPE``.

YaRN for Qwen3 to 131,072 tokens: factor 4 over 32,768 (Qwen3-4B model card, "Processing Long Texts").
"""

from __future__ import annotations

import json
import shlex
from typing import Any

_LLAMA_CACHE = {"fp16": "f16", "bf16": "bf16", "q8_0": "q8_0", "q4_0": "q4_0"}


def _yarn(rope: dict[str, Any] | None) -> dict[str, Any] | None:
    if rope and (rope.get("rope_type") or rope.get("type")) == "yarn":
        return {"rope_type": "yarn", "factor": float(rope["factor"]),
                "original_max_position_embeddings": int(rope["original_max_position_embeddings"])}
    return None


def render(
    engine: str, *, model: str, context: int, concurrency: int, cache: str, weights: str,
    gpu_memory_utilization: float, compute_capability: tuple[int, int], rope: dict[str, Any] | None,
    yarn_requested: bool,
) -> list[str]:
    """The argv (as a list) that starts ``engine`` with this plan.

    Args:
        engine: ``vllm``, ``sglang``, ``llamacpp`` or ``ollama``.
        context: tokens per sequence; concurrency: sequences served at once.
        cache: KV cache type (keys of :data:`~sovereign.hardware.kv.CACHE_TYPES`).
        weights: weight format (keys of :data:`~sovereign.hardware.kv.WEIGHT_FORMATS`, or a GGUF type).
        gpu_memory_utilization: fraction of GPU memory the engine may use (vLLM / SGLang).
        rope: the YaRN rope_scaling to apply, if any; yarn_requested: it is not in the checkpoint's config.
    """
    yarn = _yarn(rope) if yarn_requested else None
    if engine == "vllm":
        argv = ["vllm", "serve", model, "--max-model-len", str(context), "--max-num-seqs", str(concurrency),
                "--gpu-memory-utilization", f"{gpu_memory_utilization:.2f}",
                "--kv-cache-dtype", "fp8" if cache == "fp8" else "auto"]
        if weights == "fp8":
            argv += ["--quantization", "fp8"]
        if compute_capability < (8, 0) and weights in ("bf16", "fp16"):
            argv += ["--dtype", "half"]
        if yarn:
            argv += ["--hf-overrides", json.dumps({"rope_scaling": yarn, "max_position_embeddings": context})]
        return argv
    if engine == "sglang":
        argv = ["python", "-m", "sglang.launch_server", "--model-path", model, "--context-length", str(context),
                "--max-running-requests", str(concurrency), "--mem-fraction-static", f"{gpu_memory_utilization:.2f}",
                "--kv-cache-dtype", "fp8_e4m3" if cache == "fp8" else "auto"]
        if weights == "fp8":
            argv += ["--quantization", "fp8"]
        if yarn:
            argv += ["--json-model-override-args", json.dumps({"rope_scaling": yarn})]
        return argv
    if engine == "llamacpp":
        kv = _LLAMA_CACHE[cache]
        argv = ["llama-server", "-m", model, "-c", str(context * concurrency), "--parallel", str(concurrency),
                "-ngl", "99", "-fa", "on", "--cache-type-k", kv, "--cache-type-v", kv]
        if yarn:
            argv += ["--rope-scaling", "yarn", "--rope-scale", f"{yarn['factor']:g}",
                     "--yarn-orig-ctx", str(yarn["original_max_position_embeddings"])]
        return argv
    if engine == "ollama":
        return [f"OLLAMA_NUM_PARALLEL={concurrency}", f"OLLAMA_CONTEXT_LENGTH={context}",
                "OLLAMA_FLASH_ATTENTION=1", f"OLLAMA_KV_CACHE_TYPE={_LLAMA_CACHE[cache]}", "ollama", "serve"]
    raise ValueError(f"no flag renderer for engine {engine!r}")


def command_line(argv: list[str]) -> str:
    """argv as one shell-quoted line."""
    return " ".join(shlex.quote(a) if not a.startswith("OLLAMA_") else a for a in argv)
