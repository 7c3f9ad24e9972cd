"""Drift bookkeeping benchmark: what recording costs a request, and what the background work costs.

Run: ``.venv/bin/python bench/drift_bench.py [--iterations 20000] [--observations 50000]`` (prints
one JSON object and writes ``bench/results/drift.json``; seconds, no model needed).

1. ``hot_path``: every drift call one request makes (``observe_prompt``, ``record_category`` x 3 in
   TokenClock.finish and the router node, ``record_number`` x 2, the retrieval's
   ``observe_query_vector`` and ``record_category``), timed as one block with ``perf_counter_ns``;
   median and p99 microseconds over ``--iterations`` requests, with the recorder off and on (the
   deque drained every 10,000 requests, as the flush would). Target: median <= 100 us added.
2. ``background``: one flush of ``--observations`` requests' observations (language detection,
   projections, one SQLite transaction) and one check (window read + every test), seconds, on a
   fresh ``drift.sqlite`` in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sovereign.config import DriftSettings
from sovereign.observability.drift import DriftRecorder
from sovereign.observability.drift_monitor import DriftMonitor
from sovereign.observability.drift_store import DriftStore
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "drift.json"
REQUEST = GenerationRequest(model="smollm2-135m-instruct", sampling=SamplingParams(), messages=(
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "How do I read a JSON file with the json module, and what does json.load return? " * 3)))


def one_request(recorder: DriftRecorder, vector: np.ndarray) -> None:
    """The drift calls of one chat request that also searches documents and routes in the agent."""
    recorder.observe_prompt(REQUEST)
    recorder.record_category("route", "retrieve")
    recorder.observe_query_vector(vector)
    recorder.record_number("retrieval_score", 0.61)
    recorder.record_category("collection", "pydocs")
    recorder.record_category("model", "smollm2-135m-instruct")
    recorder.record_category("finish_reason", "stop")
    recorder.record_number("prompt_tokens", 87)


def hot_path(iterations: int, enabled: bool) -> dict[str, float]:
    recorder = DriftRecorder()
    if enabled:
        recorder.enable(20_000)
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    timings: list[int] = []
    for i in range(iterations):
        began = time.perf_counter_ns()
        one_request(recorder, vector)
        timings.append(time.perf_counter_ns() - began)
        if i % 10_000 == 9_999:
            recorder.drain()
    timings.sort()
    return {"median_us": statistics.median(timings) / 1000, "p99_us": timings[int(0.99 * len(timings))] / 1000,
            "mean_us": statistics.fmean(timings) / 1000}


async def background(observations: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = DriftStore(Path(tmp) / "drift.sqlite")
        await store.open()
        recorder = DriftRecorder()
        recorder.enable(observations * 8)
        monitor = DriftMonitor(DriftSettings(enabled=True), store, recorder)
        prompts = ["How do I open a file?", "Comment ouvrir un fichier ?", "Wie öffne ich eine Datei?"]
        now = time.time()
        for i in range(observations):
            at = now - 3000 + 3000 * i / observations
            recorder.buffer.extend([
                (2, "language", prompts[i % 3], at), (0, "route", "retrieve" if i % 3 else "direct", at),
                (3, "query_projection", rng.standard_normal(384).astype(np.float32), at),
                (1, "retrieval_score", float(rng.normal(0.6, 0.1)), at), (0, "collection", "pydocs", at),
                (0, "model", "m", at), (0, "finish_reason", "stop", at), (1, "prompt_tokens", float(i % 90), at)])
        began = time.perf_counter()
        rows = await monitor.flush()
        flush_s = time.perf_counter() - began
        began = time.perf_counter()
        await monitor.capture_baseline(3600, now=now)
        baseline_s = time.perf_counter() - began
        began = time.perf_counter()
        report = await monitor.check(now)
        check_s = time.perf_counter() - began
        await store.close()
    return {"observations": observations, "rows": rows, "flush_s": round(flush_s, 3),
            "flush_us_per_request": round(flush_s / observations * 1e6, 1), "baseline_s": round(baseline_s, 3),
            "check_s": round(check_s, 3), "signals_tested": len(report["signals"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--observations", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true", help="Print only; do not write bench/results/drift.json.")
    args = parser.parse_args()
    hot_path(2_000, True)  # warm-up
    off, on = hot_path(args.iterations, False), hot_path(args.iterations, True)
    result = {
        "benchmark": "drift", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "hot_path": {"iterations": args.iterations, "calls_per_request": 8, "recorder_off": off, "recorder_on": on,
                     "added_median_us": round(on["median_us"] - off["median_us"], 2), "target_us": 100},
        "background": asyncio.run(background(args.observations)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if not args.no_write:
        RESULT.write_text(text + "\n")


if __name__ == "__main__":
    main()
