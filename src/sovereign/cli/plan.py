"""``sovereign plan``: what fits on a GPU, how fast it can decode, and the engine flags that do it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sovereign.errors import InvalidRequestError


def _target(gpu: str | None, memory: str | None, cc: str | None, bandwidth: str | None) -> Any:
    from sovereign.hardware.detect import detect_gpus
    from sovereign.hardware.engines import parse_cc
    from sovereign.hardware.gpus import require_spec
    from sovereign.hardware.planner import GpuTarget
    from sovereign.hardware.sizes import parse_bandwidth, parse_bytes

    if cc is not None:
        try:
            parse_cc(cc)
        except ValueError as exc:
            raise InvalidRequestError(
                f"compute_capability: {cc!r} is not like 8.9.", param="compute_capability"
            ) from exc
    bw = parse_bandwidth(bandwidth) if bandwidth else None
    if gpu:
        spec = require_spec(gpu)
        return GpuTarget(spec.name, parse_bytes(memory) if memory else spec.memory, cc or spec.compute_capability,
                         bw or spec.bandwidth, spec.source)
    if memory:
        return GpuTarget("GPU (given)", parse_bytes(memory), cc or "8.0", bw, "command-line options"
                         + ("" if cc else "; compute capability assumed 8.0, pass --compute-capability"))
    gpus, _, _, error = detect_gpus()
    if not gpus:
        raise InvalidRequestError(
            f"gpu_memory: no NVIDIA GPU found here ({error or 'NVML reports none'}); pass --gpu-memory 24GiB "
            "(and --compute-capability) or --gpu tesla-p4 to plan for another machine.", param="gpu_memory")
    best = max(gpus, key=lambda g: g.memory_total)
    return GpuTarget(best.name, best.memory_total, cc or best.compute_capability, bw or best.bandwidth,
                     f"detected via NVML ({best.bandwidth_source or 'bandwidth unknown'})")


def _print(p: dict[str, Any], console: Console) -> None:
    gib = 1024**3
    g, m = p["gpu"], p["model"]
    bw = f"{g['bandwidth'] / 1e9:.0f} GB/s" if g["bandwidth"] else "unknown"
    console.print(f"[bold]{m['architecture']}[/] {m['params'] / 1e9:.2f} B params, {m['attention']}, max context "
                  f"{m['max_context']} | [bold]{g['name']}[/] {g['memory'] / gib:.2f} GiB, "
                  f"cc {g['compute_capability']}, "
                  f"{bw} | want {p['context']} tokens x {p['concurrency']} sequences")
    table = Table(title="Options (best precision first)")
    for col in ("engine", "weights", "KV cache", "weights GiB", "KV/token KiB", "KV budget GiB", "KV needed GiB",
                "fits", "max ctx @conc", "max conc @ctx", "decode tok/s (1 / all)"):
        table.add_column(col)
    rec = p["recommended"]
    for o in p["options"]:
        tps = f"{o['decode_tps_single']:.0f} / {o['decode_tps_aggregate']:.0f}" if o["decode_tps_single"] else "-"
        mark = "yes" if o["fits"] else "[red]no[/]"
        if o == rec:
            mark = "[bold green]yes *[/]" if o["fits"] else f"[yellow]-ngl {o['gpu_layers']} *[/]"
        table.add_row(o["engine"], o["weights"], o["cache"], f"{o['weights_bytes'] / gib:.2f}",
                      f"{o['kv_bytes_per_token'] / 1024:.1f}", f"{o['kv_budget_bytes'] / gib:.2f}",
                      f"{o['kv_bytes_needed'] / gib:.2f}", mark, str(o["max_context_at_concurrency"]),
                      str(o["max_concurrency_at_context"]), tps)
    console.print(table)
    if rec:
        console.print(f"[bold]Recommended:[/] {rec['engine']}, {rec['weights']} weights, {rec['cache']} KV cache"
                      + ("" if rec["fits"] else f", {rec['gpu_layers']} layers on the GPU"))
        console.print(p["command"], soft_wrap=True, markup=False, highlight=False)
    else:
        console.print("[bold red]No engine that runs on this GPU can serve this plan.[/]")
    for note in p["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)


def plan(
    model: Annotated[Path, typer.Option("--model", "-m", help="config.json, a model directory or a .gguf file.")],
    gpu_memory: Annotated[str | None, typer.Option("--gpu-memory", help="GPU memory, e.g. 24GiB.")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="A catalog GPU, e.g. tesla-p4, rtx-4090-laptop.")] = None,
    compute_capability: Annotated[str | None, typer.Option("--compute-capability", help="e.g. 8.9")] = None,
    bandwidth: Annotated[str | None, typer.Option("--bandwidth", help="Memory bandwidth, e.g. 576GB/s.")] = None,
    context: Annotated[int | None, typer.Option("--context", help="Tokens per sequence (default: model max).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Sequences served at once.")] = 1,
    engine: Annotated[str | None, typer.Option("--engine", help="vllm, sglang or llamacpp.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="bf16, fp8, q8_0, q4_k_m ...")] = None,
    kv_cache: Annotated[str | None, typer.Option("--kv-cache", help="fp16, bf16, fp8, q8_0, q4_0.")] = None,
    yarn: Annotated[float | None, typer.Option("--yarn", help="Enable YaRN rope scaling by this factor.")] = None,
    yarn_original: Annotated[int | None, typer.Option(
        "--yarn-original", help="Pre-scaling context for YaRN (default: 32768 for Qwen3, else the model's).")] = None,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Model id for the engine flags.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Weights + KV cache memory, max context / concurrency, decode ceiling and engine flags."""
    from sovereign.hardware.model import read_model
    from sovereign.hardware.planner import plan as make_plan

    overrides = None
    if yarn is not None:
        if yarn <= 1:
            raise InvalidRequestError("yarn: the factor must be larger than 1, e.g. 4.", param="yarn")
        base = read_model(model)
        # Qwen3 model card ("Processing Long Texts"): factor 4.0 over original_max_position_embeddings 32768
        native = yarn_original or (32768 if base.architecture.startswith("qwen3") else base.native_context)
        overrides = {"rope_scaling": {"rope_type": "yarn", "factor": yarn, "original_max_position_embeddings": native}}
    facts = read_model(model, overrides=overrides)
    if yarn is not None and facts.source == "gguf":
        facts.max_context = int(facts.native_context * yarn)
        facts.rope_scaling = overrides["rope_scaling"] if overrides else None
    target = _target(gpu, gpu_memory, compute_capability, bandwidth)
    result = make_plan(facts, target, context=context or facts.max_context, concurrency=concurrency, engine=engine,
                       weights=weights, cache=kv_cache, model_ref=model_name, yarn_requested=yarn is not None)
    data = result.to_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print(data, Console(width=200))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
