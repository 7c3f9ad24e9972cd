"""Architecture facts of a model, read from a Hugging Face ``config.json`` or from GGUF metadata.

What the planner needs: layers, attention heads, KV heads (GQA/MQA), head dim, hidden size,
vocabulary, maximum context, which layers use sliding-window attention, parameter count and the
weight dtype / quantization.

``head_dim`` is taken from the file whenever the file states it (``head_dim`` in Gemma and Qwen3
configs, ``{arch}.attention.key_length`` in GGUF); only when absent is it ``hidden_size /
num_attention_heads`` (the transformers default; llama.cpp ``n_embd_head_k`` default likewise).
For Qwen3-4B the two differ: 128 stated vs 2560 / 32 = 80.

Errors: every malformed, incomplete or unsupported input raises
:class:`~sovereign.errors.InvalidRequestError` whose ``param`` and message name the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sovereign.errors import InvalidRequestError

# model_type -> (norms per layer, q/k RMS-norm weights per layer as multiples of head_dim). Counting
# follows each architecture's transformers modeling file (modeling_<type>.py). Unknown types are errors:
# silently applying Llama's shapes to an unknown architecture would give wrong numbers.
ARCHITECTURES: dict[str, tuple[int, int]] = {
    "llama": (2, 0), "mistral": (2, 0), "mixtral": (2, 0), "qwen2": (2, 0), "qwen3": (2, 2),
    "qwen3_moe": (2, 2), "gemma": (2, 0), "gemma2": (4, 0), "gemma3_text": (4, 2), "phi3": (2, 0),
}
DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "float8_e4m3fn": 1.0}


@dataclass
class ModelFacts:
    """Architecture facts. Sizes in elements; ``weights_bytes`` in bytes (exact for GGUF).

    ``layer_kinds[i]`` is ``"full"`` or ``"sliding"``; ``window_honoured`` is True when the sliding
    layers come from an explicit per-layer pattern (``layer_types``, Gemma 2 / 3 alternation), which
    engines with hybrid KV managers allocate by window; uniform ``sliding_window`` values (Mistral,
    Phi-3) are reported but planned as full attention, the conservative choice.
    """

    source: str
    path: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    head_dim_v: int
    hidden_size: int
    intermediate_size: int | None
    vocab_size: int
    max_context: int
    native_context: int
    rope_scaling: dict[str, Any] | None
    sliding_window: int | None
    layer_kinds: list[str]
    window_honoured: bool
    n_params: int
    active_params: int
    embedding_params: int
    tied_embeddings: bool
    weight_dtype: str
    weights_bytes: int | None
    head_dim_explicit: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def n_sliding(self) -> int:
        return sum(1 for k in self.layer_kinds if k == "sliding") if self.window_honoured else 0

    @property
    def n_full(self) -> int:
        return self.n_layers - self.n_sliding

    @property
    def attention(self) -> str:
        """``MHA``, ``MQA`` or ``GQA (heads:kv_heads)``."""
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else f"GQA ({self.n_heads}:{self.n_kv_heads})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attention"] = self.attention
        data["layer_kinds"] = {"full": self.layer_kinds.count("full"), "sliding": self.layer_kinds.count("sliding")}
        return data


def _bad(name: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{name}: {message}", param=name)


def _int(cfg: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise _bad(key, f"missing from {where}; a config.json of a causal LM must state it.")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(key, f"must be a positive integer in {where}, got {value!r}.")
    return value


def _layer_kinds(cfg: dict[str, Any], model_type: str, n_layers: int, where: str) -> tuple[list[str], bool]:
    """Per-layer attention kind and whether the pattern is explicit (see :class:`ModelFacts`)."""
    window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n_layers:
            raise _bad("layer_types", f"must list {n_layers} entries (num_hidden_layers) in {where}.")
        kinds = ["sliding" if t == "sliding_attention" else "full" for t in types]
        return kinds, any(k == "sliding" for k in kinds)
    if model_type == "gemma2":  # modeling_gemma2.py: layer i is sliding when i % 2 == 0
        return ["sliding" if i % 2 == 0 else "full" for i in range(n_layers)], True
    if model_type == "gemma3_text":  # configuration_gemma3.py: every `sliding_window_pattern`-th layer is full
        pattern = int(cfg.get("sliding_window_pattern", 6))
        return ["full" if (i + 1) % pattern == 0 else "sliding" for i in range(n_layers)], True
    if model_type in ("qwen2", "qwen3", "qwen3_moe") and cfg.get("use_sliding_window") and window:
        first = int(cfg.get("max_window_layers", n_layers))
        return ["sliding" if i >= first else "full" for i in range(n_layers)], True
    if window and model_type in ("mistral", "phi3", "mixtral"):
        return ["sliding"] * n_layers, False
    return ["full"] * n_layers, False


def _hf_context(cfg: dict[str, Any], where: str) -> tuple[int, int, dict[str, Any] | None]:
    """(max context, native context, rope_scaling). YaRN extends the window to
    ``original_max_position_embeddings x factor`` (Qwen3 model card, "Processing Long Texts");
    Llama 3.1's ``llama3`` scaling is already reflected in ``max_position_embeddings``."""
    native = _int(cfg, "max_position_embeddings", where)
    rope = cfg.get("rope_scaling")
    if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) == "yarn":
        original = int(rope.get("original_max_position_embeddings") or native)
        return max(native, int(original * float(rope.get("factor", 1.0)))), original, rope
    return native, native, rope if isinstance(rope, dict) else None


def read_hf_config(path: Path, *, overrides: dict[str, Any] | None = None) -> ModelFacts:
    """Facts from a Hugging Face ``config.json`` (a file, or a directory holding one).

    Args:
        path: the file or the model directory.
        overrides: keys applied over the file, e.g. ``{"rope_scaling": {...}}`` to plan with YaRN.

    Raises:
        InvalidRequestError: unreadable or non-JSON file, a missing or non-positive field, an unknown
            ``model_type`` (message and ``param`` name the field).
    """
    file = path / "config.json" if path.is_dir() else path
    where = str(file)
    try:
        cfg = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise _bad("model", f"{file} does not exist.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad("model", f"{file} is not a readable JSON config.json: {exc}") from exc
    if not isinstance(cfg, dict):
        raise _bad("model", f"{file} must hold a JSON object.")
    if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = {**cfg["text_config"], "torch_dtype": cfg.get("torch_dtype")}
    cfg.update(overrides or {})
    model_type = cfg.get("model_type")
    if model_type not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise _bad("model_type", f"unknown architecture {model_type!r} in {where}; supported: {known}.")
    layers = _int(cfg, "num_hidden_layers", where)
    heads = _int(cfg, "num_attention_heads", where)
    kv_heads = _int(cfg, "num_key_value_heads", where, default=heads)
    hidden = _int(cfg, "hidden_size", where)
    vocab = _int(cfg, "vocab_size", where)
    inter = _int(cfg, "intermediate_size", where)
    explicit = cfg.get("head_dim") is not None
    if explicit:
        head_dim = _int(cfg, "head_dim", where)
    elif hidden % heads:
        raise _bad("head_dim", f"absent and hidden_size {hidden} is not divisible by num_attention_heads {heads}.")
    else:
        head_dim = hidden // heads
    if heads % kv_heads:
        raise _bad("num_key_value_heads", f"{kv_heads} must divide num_attention_heads {heads} in {where}.")
    max_ctx, native, rope = _hf_context(cfg, where)
    kinds, honoured = _layer_kinds(cfg, model_type, layers, where)
    tied = bool(cfg.get("tie_word_embeddings", model_type.startswith("gemma")))
    norms, qk_norm = ARCHITECTURES[model_type]
    attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    if cfg.get("attention_bias") or model_type == "qwen2":
        attn += heads * head_dim + 2 * kv_heads * head_dim
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
    per_tok = int(cfg.get("num_experts_per_tok") or 1)
    expert_ff = int(cfg.get("moe_intermediate_size") or inter)
    mlp_one = 3 * hidden * expert_ff  # gated MLP: gate, up, down
    router = hidden * experts if experts > 1 else 0
    per_layer_fixed = attn + norms * hidden + qk_norm * head_dim + router
    embed = vocab * hidden
    n_params = layers * (per_layer_fixed + experts * mlp_one) + embed * (1 if tied else 2) + hidden
    active = layers * (per_layer_fixed + min(per_tok, experts) * mlp_one) + embed * (1 if tied else 2) + hidden
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    notes = []
    if not honoured and cfg.get("sliding_window") and model_type in ("mistral", "phi3", "mixtral"):
        notes.append(f"sliding_window {cfg['sliding_window']} on every layer: planned as full attention "
                     "(engines differ in whether they cap the cache at the window).")
    if isinstance(cfg.get("quantization_config"), dict):
        notes.append(f"quantization_config {cfg['quantization_config'].get('quant_method')!r}: weight bytes "
                     "estimated from the parameter count; pass --weights to set the format.")
    return ModelFacts(
        source="hf-config", path=where, architecture=model_type, n_layers=layers, n_heads=heads,
        n_kv_heads=kv_heads, head_dim=head_dim, head_dim_v=head_dim, hidden_size=hidden,
        intermediate_size=inter, vocab_size=vocab, max_context=max_ctx, native_context=native, rope_scaling=rope,
        sliding_window=cfg.get("sliding_window"), layer_kinds=kinds, window_honoured=honoured,
        n_params=n_params, active_params=active, embedding_params=embed, tied_embeddings=tied,
        weight_dtype=dtype, weights_bytes=None, head_dim_explicit=explicit, notes=notes,
    )


def read_gguf(path: Path) -> ModelFacts:
    """Facts from GGUF metadata (``gguf.GGUFReader``); parameter count and weight bytes are exact
    sums over the tensors. Keys per the GGUF spec (ggml-org/ggml docs/gguf.md): ``general.architecture``,
    ``{arch}.block_count``, ``{arch}.attention.head_count[_kv]``, ``{arch}.attention.key_length`` /
    ``value_length``, ``{arch}.embedding_length``, ``{arch}.context_length``,
    ``{arch}.attention.sliding_window``.

    Raises:
        InvalidRequestError: not a GGUF file, or a required key missing (named in the message).
    """
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise _bad("model", f"{path} is not a readable GGUF file: {exc}") from exc

    def get(key: str, default: Any = None) -> Any:
        fld = reader.fields.get(key)
        return default if fld is None else fld.contents()

    arch = get("general.architecture")
    if not arch:
        raise _bad("general.architecture", f"missing from the GGUF metadata of {path}.")

    def need(suffix: str) -> int:
        value = get(f"{arch}.{suffix}")
        if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv) -> the largest
            value = max(value)
        if value is None or int(value) <= 0:
            raise _bad(f"{arch}.{suffix}", f"missing from the GGUF metadata of {path}.")
        return int(value)

    layers, heads, hidden = need("block_count"), need("attention.head_count"), need("embedding_length")
    kv_value = get(f"{arch}.attention.head_count_kv", heads)
    kv_heads = int(max(kv_value) if isinstance(kv_value, list) else kv_value)
    key_len = get(f"{arch}.attention.key_length")
    head_dim = int(key_len) if key_len else hidden // heads
    head_dim_v = int(get(f"{arch}.attention.value_length") or head_dim)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(get(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else 0))
    ctx = need("context_length")
    window = get(f"{arch}.attention.sliding_window")
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    weights = sum(int(t.n_bytes) for t in reader.tensors)
    embed = next((int(t.n_elements) for t in reader.tensors if t.name == "token_embd.weight"), 0)
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    file_type = get("general.file_type")
    try:
        dtype = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else "?"
    except ValueError:
        dtype = f"file_type {file_type}"
    ff = get(f"{arch}.feed_forward_length")
    ff_int = int(max(ff) if isinstance(ff, list) else ff) if ff else None
    return ModelFacts(
        source="gguf", path=str(path), architecture=str(arch), n_layers=layers, n_heads=heads, n_kv_heads=kv_heads,
        head_dim=head_dim, head_dim_v=head_dim_v, hidden_size=hidden, intermediate_size=ff_int, vocab_size=vocab,
        max_context=ctx, native_context=ctx, rope_scaling=None, sliding_window=int(window) if window else None,
        layer_kinds=["full"] * layers, window_honoured=False, n_params=n_params, active_params=n_params,
        embedding_params=embed, tied_embeddings=tied, weight_dtype=dtype, weights_bytes=weights,
        head_dim_explicit=bool(key_len),
        notes=[f"sliding_window {window} in metadata: planned as full attention."] if window else [],
    )


def read_model(path: Path | str, *, overrides: dict[str, Any] | None = None) -> ModelFacts:
    """Facts from a ``.gguf`` file, a ``config.json`` or a model directory holding one.

    Raises:
        InvalidRequestError: the path does not exist or is neither (``param="model"``).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise _bad("model", f"{p} does not exist; give a config.json, a model directory or a .gguf file.")
    if p.is_file():
        with p.open("rb") as fh:
            if fh.read(4) == b"GGUF":
                return read_gguf(p)
    return read_hf_config(p, overrides=overrides)
