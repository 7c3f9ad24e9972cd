"""``sovereign doctor``: what this machine has and which inference engines can run on it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]


def _gib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB"


def print_report(report: dict[str, Any], console: Console) -> None:
    """Render the doctor's report as Rich tables."""
    host = report["host"]
    cpu = host["cpu"]
    table = Table(title="Host", show_header=False)
    table.add_row("OS", host["os"])
    table.add_row("CPU", f"{cpu['model']} ({cpu['arch']}), {cpu['physical_cores']} cores / "
                         f"{cpu['logical_cores']} threads")
    table.add_row("Instruction sets", ", ".join(cpu["flags"]) or "none of interest")
    table.add_row("AVX2 / AVX-512 / NEON", " / ".join("yes" if cpu[k] else "no" for k in ("avx2", "avx512", "neon")))
    table.add_row("RAM", f"{_gib(host['ram_total'])} total, {_gib(host['ram_available'])} available")
    table.add_row("NVIDIA driver / CUDA", f"{host['driver_version'] or '-'} / {host['cuda_version'] or '-'}")
    table.add_row("llama.cpp GPU backends", ", ".join(report["llamacpp_gpu_backends"]) or "none (CPU build)")
    console.print(table)
    if host["gpus"]:
        gpus = Table(title="GPUs")
        for col in ("#", "name", "compute cap.", "memory total", "memory free", "bandwidth"):
            gpus.add_column(col)
        for g in host["gpus"]:
            bw = f"{g['bandwidth'] / 1e9:.0f} GB/s" if g["bandwidth"] else "unknown"
            gpus.add_row(str(g["index"]), g["name"], g["compute_capability"], _gib(g["memory_total"]),
                         _gib(g["memory_free"]), bw)
        console.print(gpus)
    else:
        console.print(f"[bold yellow]GPU:[/] {report['gpu_summary']}")
    disks = Table(title="Disks")
    for col in ("mount", "total", "free"):
        disks.add_column(col)
    for d in host["disks"]:
        disks.add_row(d["mountpoint"], _gib(d["total"]), _gib(d["free"]))
    console.print(disks)
    engines = Table(title="Engines")
    for col in ("engine", "can run", "on", "why", "source"):
        engines.add_column(col, overflow="fold")
    for e in report["engines"]:
        engines.add_row(e["name"], "[green]yes[/]" if e["runnable"] else "[red]no[/]", e["device"] or "-",
                        e["reason"], e["source"])
    console.print(engines)


def doctor(as_json: JsonOption = False) -> None:
    """CPU, RAM, instruction sets, NVIDIA GPUs (NVML), disks, and which engines can run here."""
    from sovereign.hardware.report import system_report

    report = system_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report, Console(width=160))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
