"""Gateway overhead benchmark: llama-cpp-python in-process vs the same model through the gateway.

Run: ``.venv/bin/python bench/gateway_bench.py [--runs 16 --max-tokens 96 --threads 2 --cache]``; prints JSON.

(a) ``Llama.create_chat_completion(stream=True)`` called directly in this process;
(b) ``sovereign serve`` as a separate process, called with the ``openai`` SDK (streaming).
(a) and (b) alternate request by request on the same prompt sequence, so both see the same load.
Same GGUF (bundled SmolLM2-135M-Instruct Q4_1), same prompts, greedy decoding (temperature 0), same
thread count. Per request: TTFT (request sent -> first content token), prefill tokens/s
(prompt tokens / TTFT), decode tokens/s ((completion tokens - 1) / (last token - first token)).
Then aggregate output tokens/s through the gateway with 1, 4 and 8 concurrent streams.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in the morning.",
    "Write a long letter to a friend about learning to cook.",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    ttft = [r["ttft_s"] for r in rows]
    return {
        "ttft_ms_p50": round(percentile(ttft, 50) * 1000, 2),
        "ttft_ms_p95": round(percentile(ttft, 95) * 1000, 2),
        "prefill_tokens_per_s": round(statistics.median(r["prefill_tps"] for r in rows), 1),
        "decode_tokens_per_s": round(statistics.median(r["decode_tps"] for r in rows), 1),
        "completion_tokens_mean": round(statistics.mean(r["completion_tokens"] for r in rows), 1),
    }


def direct_once(llm: object, prompt: str, max_tokens: int) -> dict[str, float]:
    """One streamed chat completion on an in-process ``Llama`` (path (a))."""
    start = time.perf_counter()
    first = last = None
    count = 0
    messages = [{"role": "user", "content": prompt}]
    for chunk in llm.create_chat_completion(messages, stream=True, max_tokens=max_tokens, temperature=0):  # type: ignore[attr-defined]
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    assert first is not None and last is not None
    prompt_tokens = llm.n_tokens - count  # type: ignore[attr-defined]  # context = prompt + output (within 1)
    return {
        "ttft_s": first - start,
        "prefill_tps": prompt_tokens / (first - start),
        "decode_tps": (count - 1) / (last - first),
        "completion_tokens": count,
    }


def start_gateway(threads: int, n_ctx: int, data_dir: str, cache: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    port = 18000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update({"SOVEREIGN_DATA_DIR": data_dir, "SOVEREIGN_ENGINE__N_THREADS": str(threads),
                "SOVEREIGN_CACHE__ENABLED": str(cache).lower(),
                "SOVEREIGN_ENGINE__N_CTX": str(n_ctx)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "sovereign", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gateway did not become ready")


def stream_once(client: object, prompt: str, max_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first = last = None
    usage = None
    count = 0
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    assert usage is not None and first is not None and last is not None
    return {
        "ttft_s": first - start,
        "prefill_tps": usage.prompt_tokens / (first - start),
        "decode_tps": (usage.completion_tokens - 1) / (last - first),
        "completion_tokens": usage.completion_tokens,
        "wall_s": last - start,
    }


def run_interleaved(
    llm: object, url: str, runs: int, max_tokens: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Alternate (a) and (b) on the same prompt sequence so both see the same machine load."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    direct, gateway = [], []
    for i in range(runs + 1):
        prompt = PROMPTS[i % len(PROMPTS)] + f" (variant {i})"
        if i % 2:  # alternate which goes first, so neither always inherits a warmer machine
            b = stream_once(client, prompt, max_tokens)
            a = direct_once(llm, prompt, max_tokens)
        else:
            a = direct_once(llm, prompt, max_tokens)
            b = stream_once(client, prompt, max_tokens)
        if i:  # the first pair is warm-up
            direct.append(a)
            gateway.append(b)
    return direct, gateway


def run_concurrency(url: str, streams: int, max_tokens: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
    results: list[dict[str, float]] = []

    def worker(i: int) -> None:
        results.append(stream_once(client, PROMPTS[i % len(PROMPTS)] + f" (stream {i})", max_tokens))

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r["completion_tokens"] for r in results)
    return {"streams": streams, "completed": len(results), "output_tokens": tokens,
            "aggregate_tokens_per_s": round(tokens / wall, 1), "wall_s": round(wall, 2),
            "ttft_ms_p50": round(percentile([r["ttft_s"] for r in results], 50) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--cache", action="store_true",
                        help="Keep the response cache on: every request is a miss, so this measures its cost.")
    args = parser.parse_args()

    from llama_cpp import Llama

    from sovereign.backends.llamacpp import default_model_path

    model = str(default_model_path())
    llm = Llama(model_path=model, n_ctx=args.ctx, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    with tempfile.TemporaryDirectory() as data_dir:
        proc, url = start_gateway(args.threads, args.ctx, data_dir, cache=args.cache)
        try:
            direct, gateway = run_interleaved(llm, url, args.runs, args.max_tokens)
            # with the cache on, similar prompts would be served from it: throughput only without
            concurrency = [] if args.cache else [run_concurrency(url, n, args.max_tokens) for n in (1, 4, 8)]
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    a, b = summarize(direct), summarize(gateway)
    print(json.dumps({
        "model": Path(model).name,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "direct_llama_cpp_python": a,
        "through_gateway_openai_sdk": b,
        "response_cache": "on (every request a miss)" if args.cache else "off",
        "decode_tps_ratio_gateway_over_direct": round(b["decode_tokens_per_s"] / a["decode_tokens_per_s"], 3),
        "decode_tps_ratio_paired_median": round(statistics.median(
            g["decode_tps"] / d["decode_tps"] for d, g in zip(direct, gateway, strict=True)), 3),
        "ttft_added_ms_p50": round(b["ttft_ms_p50"] - a["ttft_ms_p50"], 2),
        "ttft_added_ms_paired_median": round(statistics.median(
            (g["ttft_s"] - d["ttft_s"]) * 1000 for d, g in zip(direct, gateway, strict=True)), 2),
        "concurrency": concurrency,
        "targets": {"decode_ratio_min": 0.97, "ttft_added_ms_p50_max": 5.0},
    }, indent=2))


if __name__ == "__main__":
    main()
