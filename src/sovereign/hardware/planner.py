"""The capacity planner: what fits on a GPU, how fast it can decode, and with which engine flags.

Memory model (bytes) for an engine given ``gpu_memory``::

    usable      = gpu_memory x utilization            (vLLM --gpu-memory-utilization default 0.90)
    kv_budget   = usable - weights - activations - runtime_overhead
    kv_needed   = concurrency x kv_bytes_for_sequence(context)        (see sovereign.hardware.kv)

``activations`` is an estimate of one forward step's working set: ``step_tokens x (4 x hidden +
2 x intermediate) x 2 bytes`` (residual, attention and gated-MLP intermediates in 16-bit) plus
``logit_rows x vocab x 4 bytes`` (fp32 logits). ``step_tokens`` is the engine's default chunk:
2,048 tokens for vLLM/SGLang chunked prefill, 512 for llama.cpp's ``n_ubatch``. ``runtime_overhead``
(CUDA context, CUDA graphs, allocator slack) is a fixed estimate per engine, stated in the output;
engines measure the real figure at start-up, so keep a margin.

Decode ceiling (tokens/s): decoding is memory-bandwidth bound, each step reads every active weight
once plus each sequence's KV cache, so ``tokens/s <= bandwidth / bytes read per step`` (NVIDIA,
"Mastering LLM Techniques: Inference Optimization", 2023; Pope et al., "Efficiently Scaling
Transformer Inference", 2022). Single stream: ``bandwidth / (weights_read + kv(context))``; at
``C`` streams: ``C x bandwidth / (weights_read + C x kv(context))``. A ceiling, never a promise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sovereign.errors import ContextLengthExceededError, InvalidRequestError
from sovereign.hardware import flags as engine_flags
from sovereign.hardware import kv
from sovereign.hardware.engines import evaluate, parse_cc
from sovereign.hardware.model import ModelFacts
from sovereign.hardware.sizes import GiB


@dataclass(frozen=True)
class EngineProfile:
    """How the planner sizes one engine; ``weights``/``caches`` in preference order (best first)."""

    weights: tuple[str, ...]
    caches: tuple[str, ...]
    utilization: float
    overhead: int
    step_tokens: int
    logits_per_sequence: bool


PROFILES: dict[str, EngineProfile] = {
    "vllm": EngineProfile(("bf16", "fp8"), ("bf16", "fp8"), 0.90, 1 * GiB, 2048, True),
    "sglang": EngineProfile(("bf16", "fp8"), ("bf16", "fp8"), 0.90, 1 * GiB, 2048, True),
    "llamacpp": EngineProfile(("fp16", "q8_0", "q6_k", "q4_k_m", "q4_0"), ("fp16", "bf16", "q8_0", "q4_0"),
                              0.95, 384 * 1024**2, 512, False),
}
ENGINE_ORDER = ("vllm", "sglang", "llamacpp")


@dataclass
class GpuTarget:
    """The GPU planned for: memory (bytes), compute capability, bandwidth (bytes/s or None)."""

    name: str
    memory: int
    compute_capability: str
    bandwidth: float | None
    source: str


@dataclass
class Option:
    """One (engine, weights, cache) combination and what it allows."""

    engine: str
    weights: str
    cache: str
    weights_bytes: float
    activation_bytes: float
    overhead_bytes: float
    kv_budget_bytes: float
    kv_bytes_per_token: float
    kv_bytes_needed: float
    fits: bool
    max_context_at_concurrency: int
    max_concurrency_at_context: int
    gpu_layers: int
    decode_tps_single: float | None
    decode_tps_aggregate: float | None


@dataclass
class Plan:
    """A complete answer: the inputs, every option considered, the recommendation and its flags."""

    model: dict[str, Any]
    gpu: dict[str, Any]
    context: int
    concurrency: int
    engines: list[dict[str, Any]]
    options: list[Option]
    recommended: Option | None
    flags: list[str] = field(default_factory=list)
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def activation_bytes(facts: ModelFacts, profile: EngineProfile, concurrency: int) -> float:
    """Working-set estimate of one forward step (see module docstring)."""
    inter = facts.intermediate_size or 4 * facts.hidden_size
    rows = concurrency if profile.logits_per_sequence else profile.step_tokens
    return profile.step_tokens * (4 * facts.hidden_size + 2 * inter) * 2 + rows * facts.vocab_size * 4


def _option(facts: ModelFacts, gpu: GpuTarget, engine: str, wfmt: str | None, cache: str,
            context: int, concurrency: int) -> Option:
    profile = PROFILES[engine]
    weights, wname = kv.weights_bytes(facts, wfmt)
    act = activation_bytes(facts, profile, concurrency)
    budget = gpu.memory * profile.utilization - weights - act - profile.overhead
    needed = concurrency * kv.kv_bytes_for_sequence(facts, cache, context)
    full, sliding = kv.kv_bytes_per_token(facts, cache)
    max_ctx = min(facts.max_context, kv.max_tokens_for_budget(facts, cache, budget, concurrency))
    per_seq = kv.kv_bytes_for_sequence(facts, cache, context)
    max_conc = int(max(budget, 0) // per_seq) if per_seq else 0
    fits = budget > 0 and needed <= budget
    layers = facts.n_layers
    if not fits and engine == "llamacpp":  # partial offload: layers on the GPU carry their weights and KV
        per_layer = (weights + needed) / facts.n_layers
        room = gpu.memory * profile.utilization - act - profile.overhead
        layers = max(0, min(facts.n_layers, int(room // per_layer)))
    tps1 = tpsn = None
    if gpu.bandwidth and fits:  # a ceiling only means something for a plan that fits on the GPU
        read = kv.bytes_read_per_token(facts, weights)
        tps1 = gpu.bandwidth / (read + per_seq)
        tpsn = concurrency * gpu.bandwidth / (read + needed)
    return Option(engine, wname, cache, weights, act, profile.overhead, budget, full + sliding, needed, fits,
                  max(max_ctx, 0), max_conc, layers, tps1, tpsn)


def _formats(facts: ModelFacts, engine: str, cc: tuple[int, int], pinned: str | None) -> list[str | None]:
    if facts.source == "gguf":
        return [None]
    names = [pinned] if pinned else list(PROFILES[engine].weights)
    if engine in ("vllm", "sglang") and cc < (8, 0):
        names = [n for n in names if n != "fp8"]  # FP8 weights need cc >= 8.0 (vLLM fp8 docs: Marlin W8A16)
    return [n for n in names if n in PROFILES[engine].weights]


def plan(
    facts: ModelFacts, gpu: GpuTarget, *, context: int, concurrency: int = 1, engine: str | None = None,
    weights: str | None = None, cache: str | None = None, model_ref: str | None = None,
    yarn_requested: bool = False,
) -> Plan:
    """Plan ``facts`` on ``gpu`` for ``concurrency`` sequences of ``context`` tokens.

    Tries each runnable engine (vLLM, SGLang, llama.cpp; GGUF files only llama.cpp), each weight
    format and each KV cache type, best precision first; recommends the first that fits, else the
    llama.cpp option with the most layers on the GPU (partial offload).

    Raises:
        ContextLengthExceededError: ``context`` exceeds the model's maximum (``param="context"``).
        InvalidRequestError: non-positive context/concurrency, unknown engine / weights / cache.
    """
    for param, number in (("context", context), ("concurrency", concurrency)):
        if number <= 0:
            raise InvalidRequestError(f"{param}: must be a positive integer, got {number}.", param=param)
    if context > facts.max_context:
        hint = ""
        if facts.architecture.startswith("qwen") and not facts.rope_scaling:
            hint = " Qwen3 reaches 131072 with YaRN: pass --yarn 4 (Qwen3 model card)."
        raise ContextLengthExceededError(
            f"context: {context} tokens exceeds the model's maximum of {facts.max_context} "
            f"(max_position_embeddings / context_length in {facts.path}).{hint}", param="context")
    for name, value, allowed in (("engine", engine, PROFILES), ("weights", weights, kv.WEIGHT_FORMATS),
                                 ("kv_cache", cache, kv.CACHE_TYPES)):
        if value is not None and value not in allowed:
            raise InvalidRequestError(f"{name}: unknown value {value!r}; choose one of {', '.join(allowed)}.",
                                      param=name)
    cc = parse_cc(gpu.compute_capability)
    verdicts = evaluate(system="Linux", gpu=(gpu.name, gpu.compute_capability))
    runnable = {v.engine for v in verdicts if v.runnable and v.device == "gpu"}
    engines = [e for e in ENGINE_ORDER if e in runnable and (engine is None or e == engine)]
    if facts.source == "gguf":
        engines = [e for e in engines if e == "llamacpp"]
    notes = list(facts.notes)
    if engine and engine not in engines:
        reason = next((v.reason for v in verdicts if v.engine == engine), "")
        notes.append(f"{engine} cannot serve this model on {gpu.name}: {reason or 'GGUF files need llama.cpp.'}")
    options: list[Option] = []
    for eng in engines:
        if cache and cache not in PROFILES[eng].caches:
            notes.append(f"{eng} skipped: it has no {cache} KV cache (it offers {', '.join(PROFILES[eng].caches)}).")
            continue
        caches = [cache] if cache else list(PROFILES[eng].caches)
        for wf in _formats(facts, eng, cc, weights):
            options.extend(_option(facts, gpu, eng, wf, c, context, concurrency) for c in caches)
    recommended = next((o for o in options if o.fits), None)
    if recommended is None:
        partial = [o for o in options if o.engine == "llamacpp" and o.gpu_layers > 0]
        recommended = max(partial, key=lambda o: (o.gpu_layers, -kv.CACHE_TYPES[o.cache].bytes_per_element),
                          default=None)
        if recommended is not None:
            notes.append(f"Nothing fits entirely on the GPU; llama.cpp can keep {recommended.gpu_layers} of "
                         f"{facts.n_layers} layers (weights and their KV cache) on the GPU, the rest in RAM "
                         "(decode then runs at CPU memory speed for those layers).")
    plan_ = Plan(
        model={"path": facts.path, "architecture": facts.architecture, "params": facts.n_params,
               "max_context": facts.max_context, "attention": facts.attention},
        gpu=asdict(gpu), context=context, concurrency=concurrency,
        engines=[v.to_dict() for v in verdicts], options=options, recommended=recommended, notes=notes,
    )
    if recommended is not None:
        prof = PROFILES[recommended.engine]
        argv = engine_flags.render(
            recommended.engine, model=model_ref or facts.path, context=context, concurrency=concurrency,
            cache=recommended.cache, weights=recommended.weights, gpu_memory_utilization=prof.utilization,
            compute_capability=cc, rope=facts.rope_scaling, yarn_requested=yarn_requested)
        if recommended.engine == "llamacpp" and recommended.gpu_layers < facts.n_layers:
            argv[argv.index("-ngl") + 1] = str(recommended.gpu_layers)
        if recommended.engine == "llamacpp" and facts.source != "gguf":
            notes.append(f"llama.cpp needs a GGUF: convert or download a {recommended.weights.upper()} GGUF "
                         "of this model and pass it to -m.")
        plan_.flags, plan_.command = argv, engine_flags.command_line(argv)
    return plan_
