"""Routing overhead: direct calls vs through Sovereign vs through the LiteLLM proxy, same engine, same load.

One command (``.venv/bin/python bench/routing_bench.py``), prints one JSON object, bounded (< 8 min):

1. starts a plain llama-server (SmolLM2-135M, 1 thread, 1 slot) on 127.0.0.1;
2. starts ``sovereign serve`` twice routing public model ``bench`` to it (``llamacpp-server``
   deployment): the default (for this engine ``json_upstream``: JSON clients go upstream as JSON)
   and with ``json_upstream = false`` (upstream always streams);
3. starts ``bench/passthrough_proxy.py`` (FastAPI + uvicorn + httpx forwarding bytes, nothing
   else): the floor any gateway on this stack pays for the extra hop on this machine;
4. starts the LiteLLM proxy (``litellm[proxy]==1.106.2`` in its own venv, ``LITELLM_VENV`` or
   /tmp/litellm-venv, created on first use unless ``BENCH_NO_LITELLM`` is set) for the same engine;
5. interleaves requests to the targets (so engine drift hits all alike) and reports, per target:
   non-streaming latency p50/p99 and streaming TTFT p50/p99 (ms), the *added* latency vs direct, and
   throughput (requests/s) and JSON latency p50/p99 (with the added p50) at 1, 8 and 32 concurrent
   clients. ``max_tokens`` is small and the prompt is
   fixed (the engine's prefix cache makes its share small and stable), so the gateway share is visible.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from peer_venv import peer_python

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "40"))
LEVELS = (1, 8, 32)
PER_LEVEL_REQUESTS = {1: 16, 8: 32, 32: 64}
DEADLINE_S = 420.0
MASTER_KEY = "sk-bench-master"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2, "temperature": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 180, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one(client: httpx.AsyncClient, url: str, headers: dict[str, str], stream: bool) -> float:
    """Seconds to the whole JSON answer, or to the first content event when streaming."""
    started = time.perf_counter()
    if not stream:
        response = await client.post(url, json=BODY, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
        return time.perf_counter() - started
    async with client.stream("POST", url, json={**BODY, "stream": True}, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
        first = None
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line and '"content": ""' not in line:
                first = time.perf_counter() - started
        return first if first is not None else time.perf_counter() - started


async def throughput(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], clients: int
) -> tuple[float, list[float]]:
    """``clients`` closed-loop clients sending JSON requests: (requests/s, per-request latencies in s)."""
    total = PER_LEVEL_REQUESTS[clients]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            latencies.append(await one(client, url, headers, stream=False))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return total / (time.perf_counter() - started), latencies


async def measure(targets: dict[str, tuple[str, dict[str, str]]]) -> dict[str, object]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for url, headers in targets.values():  # warm every path
            for stream in (False, True):
                await one(client, url, headers, stream)
        lat: dict[str, dict[str, list[float]]] = {t: {"json": [], "ttft": []} for t in targets}
        started = time.monotonic()
        for _ in range(SAMPLES):
            for name, (url, headers) in targets.items():
                lat[name]["json"].append(await one(client, url, headers, False))
                lat[name]["ttft"].append(await one(client, url, headers, True))
            if time.monotonic() - started > DEADLINE_S / 2:
                break
        levels: dict[str, dict[int, tuple[float, list[float]]]] = {name: {} for name in targets}
        for c in LEVELS:  # targets interleaved per level, so drift hits all alike
            for name, (url, h) in targets.items():
                levels[name][c] = await throughput(client, url, h, c)
    out: dict[str, object] = {}
    base = lat["direct"]
    for name, series in lat.items():
        row: dict[str, object] = {"samples": len(series["json"])}
        for kind in ("json", "ttft"):
            p50, p99 = pct(series[kind], 0.5) * 1000, pct(series[kind], 0.99) * 1000
            row[f"{kind}_p50_ms"], row[f"{kind}_p99_ms"] = round(p50, 2), round(p99, 2)
            if name != "direct":
                row[f"{kind}_added_p50_ms"] = round(p50 - pct(base[kind], 0.5) * 1000, 2)
                row[f"{kind}_added_p99_ms"] = round(p99 - pct(base[kind], 0.99) * 1000, 2)
                diffs = [a - b for a, b in zip(series[kind], base[kind], strict=False)]
                row[f"{kind}_added_paired_median_ms"] = round(statistics.median(diffs) * 1000, 2)
        row["throughput_rps"] = {str(c): round(levels[name][c][0], 2) for c in LEVELS}
        row["latency_at_concurrency_ms"] = {}
        for c in LEVELS:
            p50 = pct(levels[name][c][1], 0.5) * 1000
            cell = {"p50": round(p50, 2), "p99": round(pct(levels[name][c][1], 0.99) * 1000, 2)}
            if name != "direct":
                cell["added_p50"] = round(p50 - pct(levels["direct"][c][1], 0.5) * 1000, 2)
            row["latency_at_concurrency_ms"][str(c)] = cell
        out[name] = row
    return out


def main() -> None:
    from sovereign.testing.llama_server import llama_server_args

    tmp = Path(tempfile.mkdtemp(prefix="routing-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    notes: list[str] = []

    def spawn(args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (tmp / log).open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        eport, sport, jport, lport = free_port(), free_port(), free_port(), free_port()
        engine = spawn(
            llama_server_args(eport, "bench"),
            "engine.log",
        )
        wait(f"http://127.0.0.1:{eport}/health", engine)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "direct": (f"http://127.0.0.1:{eport}/v1/chat/completions", {}),
        }
        # two gateways: the default (json_upstream on for this engine) and upstream always streaming
        for name, port, json_upstream in (("sovereign", sport, None), ("sovereign_stream_upstream", jport, "false")):
            (tmp / f"{name}.toml").write_text(
                "[engine]\nn_ctx = 512\nn_threads = 1\n[cache]\nenabled = false\n[backends]\nhealth_interval_s = 0\n"
                f'[[backends.deployments]]\nname = "llama"\nmodel = "bench"\nengine = "llamacpp-server"\n'
                f'base_url = "http://127.0.0.1:{eport}/v1"\ncontext_window = 1024\n'
                + (f"json_upstream = {json_upstream}\n" if json_upstream else "")
            )
            genv = {**env, "SOVEREIGN_CONFIG": str(tmp / f"{name}.toml"), "SOVEREIGN_DATA_DIR": str(tmp / name)}
            gateway = spawn([sys.executable, "-m", "sovereign", "serve", "--port", str(port), "--log-level", "warning"],
                            f"{name}.log", genv)
            wait(f"http://127.0.0.1:{port}/readyz", gateway)
            targets[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", {})
        pport = free_port()
        passthrough = spawn(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "passthrough_proxy:app",
             "--host", "127.0.0.1", "--port", str(pport), "--log-level", "warning", "--no-access-log"],
            "passthrough.log",
            {**env, "UPSTREAM": f"http://127.0.0.1:{eport}/v1"},
        )
        wait(f"http://127.0.0.1:{pport}/docs", passthrough)
        targets["passthrough"] = (f"http://127.0.0.1:{pport}/v1/chat/completions", {})
        venv = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv"))
        # litellm[proxy]==1.106.2: newer wheels need a certifi the registry lacks (shared/DESIGN.md)
        if not os.environ.get("BENCH_NO_LITELLM") and peer_python(
            venv, ["litellm[proxy]==1.106.2"], label="routing_bench"
        ):
            (tmp / "litellm.yaml").write_text(
                "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
                f"      api_base: http://127.0.0.1:{eport}/v1\n      api_key: unused\n"
                "litellm_settings:\n  drop_params: true\n"
            )
            lenv = {
                **env,
                "LITELLM_MASTER_KEY": MASTER_KEY,
                **{
                    k: "True"
                    for k in (
                        "LITELLM_LOCAL_MODEL_COST_MAP",
                        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS",
                        "LITELLM_LOCAL_BLOG_POSTS",
                        "LITELLM_LOCAL_AUTOROUTER_PRESETS",
                        "LITELLM_LOCAL_POLICY_TEMPLATES",
                    )
                },
            }
            litellm = spawn(
                [
                    str(venv / "bin" / "litellm"),
                    "--config",
                    str(tmp / "litellm.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(lport),
                    "--num_workers",
                    "1",
                ],
                "litellm.log",
                lenv,
            )
            auth = {"Authorization": f"Bearer {MASTER_KEY}"}
            wait(f"http://127.0.0.1:{lport}/health/liveliness", litellm, headers=auth)
            targets["litellm"] = (f"http://127.0.0.1:{lport}/v1/chat/completions", auth)
        else:
            notes.append(f"LiteLLM skipped: BENCH_NO_LITELLM set, or it could not be installed into {venv}.")
        results = asyncio.run(measure(targets))
        print(
            json.dumps(
                {
                    "engine": "llama-server, SmolLM2-135M Q4_1, 1 thread, 1 slot",
                    "max_tokens": 2,
                    "samples_per_target": SAMPLES,
                    "cpu_count": os.cpu_count(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "results": results,
                    "notes": notes,
                },
                indent=2,
            )
        )
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


if __name__ == "__main__":
    main()
