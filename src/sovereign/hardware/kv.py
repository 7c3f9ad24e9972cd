"""KV-cache and weight sizes: bytes per element of each cache type, bits per weight of each format.

KV bytes per token (one sequence, all layers)::

    2 x n_layers x n_kv_heads x head_dim x bytes_per_element

(K and V, each ``n_kv_heads x head_dim`` per layer per token). Sources: NVIDIA, "Mastering LLM
Techniques: Inference Optimization" (developer.nvidia.com/blog, 2023): "Size of KV cache per token
in bytes = 2 * (num_layers) * (num_heads * dim_head) * precision_in_bytes"; llama.cpp
``src/llama-kv-cache.cpp`` allocates per layer a K tensor of ``n_embd_k_gqa x kv_size`` and a V tensor of
``n_embd_v_gqa x kv_size`` where ``n_embd_k_gqa = n_embd_head_k x n_head_kv``. We keep K and V head
dims separate (``head_dim + head_dim_v``) as llama.cpp does; they are equal for every model here.

Sliding-window layers (Gemma 2 / 3 local layers) hold at most ``window`` tokens, so one sequence of
``L`` tokens needs ``full_bytes_per_token x L + sliding_bytes_per_token x min(L, window)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sovereign.hardware.model import ModelFacts


@dataclass(frozen=True)
class CacheType:
    """A KV-cache element type: bytes per element and where that figure comes from."""

    name: str
    bytes_per_element: float
    source: str


# ggml block sizes: ggml/src/ggml-common.h: block_q8_0 = fp16 scale + 32 x int8 = 34 bytes / 32 values;
# block_q4_0 = fp16 scale + 16 bytes of nibbles = 18 bytes / 32 values.
CACHE_TYPES: dict[str, CacheType] = {
    "fp16": CacheType("fp16", 2.0, "IEEE half: 2 bytes"),
    "bf16": CacheType("bf16", 2.0, "bfloat16: 2 bytes"),
    "fp8": CacheType("fp8", 1.0, "FP8 E4M3/E5M2: 1 byte (vLLM/SGLang --kv-cache-dtype fp8)"),
    "q8_0": CacheType("q8_0", 34 / 32, "ggml block_q8_0: 34 bytes per 32 values (ggml-common.h)"),
    "q4_0": CacheType("q4_0", 18 / 32, "ggml block_q4_0: 18 bytes per 32 values (ggml-common.h)"),
}


@dataclass(frozen=True)
class WeightFormat:
    """A weight storage format: average bits per weight and source."""

    name: str
    bits_per_weight: float
    source: str


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "bf16": WeightFormat("bf16", 16.0, "2 bytes per parameter"),
    "fp16": WeightFormat("fp16", 16.0, "2 bytes per parameter"),
    "fp8": WeightFormat("fp8", 8.0, "1 byte per parameter (vLLM docs, features/quantization/fp8)"),
    "q8_0": WeightFormat("q8_0", 8.5, "ggml block_q8_0: 34 bytes / 32 weights"),
    "q6_k": WeightFormat("q6_k", 6.5625, "ggml block_q6_K: 210 bytes / 256 weights"),
    "q4_k_m": WeightFormat(
        "q4_k_m", 4.89, "llama.cpp tools/quantize README: Llama-3.1-8B Q4_K_M = 4.58 GiB for 8.03 B weights "
        "(mixed Q4_K/Q6_K, so an average)"),
    "q4_0": WeightFormat("q4_0", 4.5, "ggml block_q4_0: 18 bytes / 32 weights"),
}


def kv_bytes_per_token(facts: ModelFacts, cache: str) -> tuple[float, float]:
    """``(full-attention layers, sliding layers)`` KV bytes per token of one sequence.

    Raises:
        KeyError: unknown cache type.
    """
    per_layer = facts.n_kv_heads * (facts.head_dim + facts.head_dim_v) * CACHE_TYPES[cache].bytes_per_element
    return facts.n_full * per_layer, facts.n_sliding * per_layer


def kv_bytes_for_sequence(facts: ModelFacts, cache: str, tokens: int) -> float:
    """KV bytes one sequence of ``tokens`` tokens holds (sliding layers capped at the window)."""
    full, sliding = kv_bytes_per_token(facts, cache)
    window = facts.sliding_window or tokens
    return full * tokens + sliding * min(tokens, window)


def max_tokens_for_budget(facts: ModelFacts, cache: str, budget: float, sequences: int) -> int:
    """Largest per-sequence length ``L`` with ``sequences x kv_bytes_for_sequence(L) <= budget``."""
    if budget <= 0 or sequences <= 0:
        return 0
    full, sliding = kv_bytes_per_token(facts, cache)
    per_seq = budget / sequences
    window = facts.sliding_window or 0
    if sliding and (full + sliding) * window >= per_seq:
        return int(per_seq // (full + sliding))
    if full == 0:
        return facts.max_context
    return int((per_seq - sliding * window) // full)


def weights_bytes(facts: ModelFacts, fmt: str | None) -> tuple[float, str]:
    """``(bytes, format name)`` of the weights: exact for GGUF, ``n_params x bits / 8`` otherwise.

    ``fmt`` None means the checkpoint's own dtype (``torch_dtype``).
    """
    if facts.weights_bytes is not None and fmt is None:
        return float(facts.weights_bytes), facts.weight_dtype
    name = fmt or {"float16": "fp16", "float32": "fp16"}.get(facts.weight_dtype, "bf16")
    return facts.n_params * WEIGHT_FORMATS[name].bits_per_weight / 8, name


def bytes_read_per_token(facts: ModelFacts, weights: float) -> float:
    """Weight bytes one decode step reads: all weights except the input embedding table (a row
    lookup) unless it is tied to the output head; MoE counts only the active experts."""
    per_param = weights / facts.n_params
    params = facts.active_params - (0 if facts.tied_embeddings else facts.embedding_params)
    return params * per_param
