"""Response-cache benchmark: backend lookup latency, cached completions through the gateway, GPTCache.

Run: ``.venv/bin/python bench/cache_bench.py [--sizes 10000 100000 --queries 2000]``; prints JSON.
``--parts lookup`` (or ``gateway``, ``pairs``) and ``--backends sqlite`` run a subset.

(1) Lookup latency of each backend (sqlite, redis on a throwaway ``redis-server``) holding N entries
    in one scope (the worst case for the per-scope index): exact ``get`` of a stored key, semantic
    ``nearest`` (with the configured threshold) for an unrelated query (``semantic``: the usual
    miss, nothing to read from storage) and for a rewording of a stored one (``semantic_hit``);
    p50/p99 in ms, embedding excluded (queries are vectors).
(2) End-to-end cached chat completions through ``sovereign serve`` over HTTP (keep-alive httpx):
    exact hits (no embedding) and semantic hits (a reworded question: the query is embedded).
(3) The labelled pairs (``data/cache_pairs/pairs.jsonl``) in one cache per system: every distinct
    cached question stored, every incoming question looked up; hit rate on paraphrases, false-hit rate
    on near-misses. Ours: per-scope index + threshold + contrast guard. GPTCache 0.1.44 (core ``Cache``,
    SQLite + FAISS, ``SearchDistanceEvaluation``) with the *same* MiniLM vectors and the same cosine
    threshold, in a separate venv (``GPTCACHE_VENV`` or ``/tmp/gptcache-venv``, created on first use),
    plus its lookup latency at 10k entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from peer_venv import peer_python

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAIRS = ROOT / "data" / "cache_pairs" / "pairs.jsonl"
GPTCACHE_VENV = Path(os.environ.get("GPTCACHE_VENV", "/tmp/gptcache-venv"))


def pct(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "n": len(ordered),
    }


def unit_rows(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def backend_latency(kind: str, size: int, queries: int, workdir: Path, redis_url: str | None) -> dict[str, Any]:
    from sovereign.cache.backends.redis import RedisCacheBackend
    from sovereign.cache.backends.sqlite import SqliteCacheBackend
    from sovereign.config import load_settings
    from sovereign.testing.cache_contract import make_entry

    if kind == "sqlite":
        backend: Any = SqliteCacheBackend(workdir / f"bench-{size}.sqlite3", max_entries=size * 2)
    else:
        backend = RedisCacheBackend(
            redis_url or "", max_entries=size * 2, timeout_s=5.0, prefix=f"bench:{uuid.uuid4().hex[:6]}:"
        )
    await backend.open()
    vectors = unit_rows(size, size)
    began = time.perf_counter()
    batch = 5000
    for start in range(0, size, batch):
        await backend.put_many(
            [make_entry(f"k{i}", "scope", vector=vectors[i], ttl=3600) for i in range(start, min(size, start + batch))]
        )
    if kind == "redis":
        await backend.open()  # full resync: what a newly started gateway process does
    load_s = time.perf_counter() - began
    picks = np.random.default_rng(1).integers(0, size, queries)
    keys = [f"k{i}" for i in picks]
    misses = unit_rows(queries, 7)  # unrelated questions: nothing within the threshold
    near = vectors[picks] + 0.01 * unit_rows(queries, 8)  # rewordings of stored ones (cosine ~0.9999)
    hits = near / np.linalg.norm(near, axis=1, keepdims=True)
    threshold = load_settings().cache.similarity_threshold
    exact, semantic, semantic_hit = [], [], []
    found = 0
    for key, miss, hit in zip(keys, misses, hits, strict=True):
        t = time.perf_counter()
        assert await backend.get(key) is not None
        exact.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert await backend.nearest("scope", miss, min_score=threshold) == []
        semantic.append(time.perf_counter() - t)
        t = time.perf_counter()
        found += bool(await backend.nearest("scope", hit, min_score=threshold))
        semantic_hit.append(time.perf_counter() - t)
    await backend.clear()
    await backend.close()
    return {
        "backend": kind,
        "entries": size,
        "load_s": round(load_s, 1),
        "exact": pct(exact),
        "semantic": pct(semantic),
        "semantic_hit": {**pct(semantic_hit), "found": round(found / queries, 4)},  # HNSW recall of the rewording
    }


def gateway_latency(workdir: Path, requests: int) -> dict[str, Any]:
    from tests.conftest import start_server

    server = start_server(workdir / "gw")
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:

            def chat(question: str) -> tuple[float, str]:
                body = {
                    "model": "smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": question}],
                    "max_tokens": 32,
                    "temperature": 0,
                }
                t = time.perf_counter()
                response = client.post("/v1/chat/completions", json=body)
                elapsed = time.perf_counter() - t
                response.raise_for_status()
                return elapsed, response.headers["x-sovereign-cache"]

            cold, status = chat("How do I copy a file in Python?")
            assert status == "miss", status
            exact, semantic = [], []
            for _ in range(requests):
                elapsed, status = chat("How do I copy a file in Python?")
                assert status == "hit-exact", status
                exact.append(elapsed)
                elapsed, status = chat("How can I copy a file in Python?")
                assert status == "hit-semantic", status
                semantic.append(elapsed)
        return {"uncached_ms": round(cold * 1000, 1), "cached_exact": pct(exact), "cached_semantic": pct(semantic)}
    finally:
        server.stop()


def ours_on_pairs(pairs: list[dict[str, Any]], vec: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    from sovereign.cache.semantic import VectorIndex, contrast

    index = VectorIndex(384)
    cached = sorted({p["a"] for p in pairs})
    for q in cached:
        index.add("s", q, vec[q], time.time() + 3600)
    hits = {"hit": [0, 0], "miss": [0, 0]}
    for p in pairs:
        found = [
            (k, s)
            for k, s in index.search("s", vec[p["b"]], k=4, now=time.time())
            if s >= threshold and contrast(p["b"], k) is None
        ]
        served = found[0][0] if found else None
        # a near-miss is falsely served when any entry but its own question (also cached, as the
        # first question of another pair) comes back
        good = served == p["a"] if p["label"] == "hit" else served not in (None, p["b"])
        hits[p["label"]][0] += int(good)
        hits[p["label"]][1] += 1
    return {
        "hit_rate": round(hits["hit"][0] / hits["hit"][1], 4),
        "false_hit_rate": round(hits["miss"][0] / hits["miss"][1], 4),
        "pairs": len(pairs),
    }


GPTCACHE_SCRIPT = r"""
import json, sys, time, statistics, numpy as np
from gptcache import Cache, Config
from gptcache.adapter.api import put, get
from gptcache.manager import get_data_manager, CacheBase, VectorBase
from gptcache.processor.pre import get_prompt
from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation
args = json.load(open(sys.argv[1]))
vec = {q: np.asarray(v, dtype="float32") for q, v in args["vectors"].items()}
def make(path, size):
    cache = Cache()
    dm = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{path}"), VectorBase("faiss", dimension=384),
                          max_size=size)
    # faiss IndexFlatL2 returns squared L2 = 2 - 2cos on unit vectors; SearchDistanceEvaluation scores
    # 4 - d2 in [0, 4] and serves score >= 4 * t, so cosine >= c  <=>  t = 1 - (1 - c) / 2.
    cache.init(pre_embedding_func=get_prompt, embedding_func=lambda x, **kw: vec[x], data_manager=dm,
               similarity_evaluation=SearchDistanceEvaluation(max_distance=4.0),
               config=Config(similarity_threshold=1 - (1 - args["threshold"]) / 2))
    return cache
cache = make(args["dir"] + "/pairs.db", 100000)
for q in sorted({p["a"] for p in args["pairs"]}):
    put(q, "ANSWER:" + q, cache_obj=cache)
stats = {"hit": [0, 0], "miss": [0, 0]}
for p in args["pairs"]:
    served = get(p["b"], cache_obj=cache)
    good = served == "ANSWER:" + p["a"] if p["label"] == "hit" else served is not None
    stats[p["label"]][0] += int(bool(good)); stats[p["label"]][1] += 1
out = {"hit_rate": round(stats["hit"][0] / stats["hit"][1], 4),
       "false_hit_rate": round(stats["miss"][0] / stats["miss"][1], 4)}
n = args["latency_entries"]
rng = np.random.default_rng(n)
rows = rng.standard_normal((n + 500, 384)).astype("float32"); rows /= np.linalg.norm(rows, axis=1, keepdims=True)
for i in range(n + 500):
    vec[f"q{i}"] = rows[i]
big = make(args["dir"] + "/lat.db", n * 2)
t0 = time.perf_counter()
for i in range(n):
    put(f"q{i}", f"a{i}", cache_obj=big)
load = time.perf_counter() - t0
samples = []
for i in range(500):
    key = f"q{i}" if i % 2 == 0 else f"q{n + i}"
    t = time.perf_counter(); get(key, cache_obj=big); samples.append(time.perf_counter() - t)
samples.sort()
out["lookup"] = {"entries": n, "load_s": round(load, 1), "p50_ms": round(statistics.median(samples) * 1000, 3),
                 "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3), "n": len(samples)}
print(json.dumps(out))
"""


def gptcache_on_pairs(
    pairs: list[dict[str, Any]], vec: dict[str, np.ndarray], threshold: float, workdir: Path, latency_entries: int
) -> dict[str, Any]:
    # GPTCache 0.1.44 needs sqlalchemy installed up front (else it runs pip at run time) and
    # faiss-cpu for its vector store (shared/DESIGN.md)
    python = peer_python(GPTCACHE_VENV, ["gptcache==0.1.44", "sqlalchemy", "faiss-cpu", "numpy"], label="cache_bench")
    if python is None:
        return {"skipped": f"GPTCache could not be installed into {GPTCACHE_VENV}"}
    spec = workdir / "gptcache-args.json"
    spec.write_text(
        json.dumps(
            {
                "pairs": pairs,
                "threshold": threshold,
                "dir": str(workdir),
                "latency_entries": latency_entries,
                "vectors": {q: v.tolist() for q, v in vec.items()},
            }
        )
    )
    script = workdir / "gptcache_run.py"
    script.write_text(GPTCACHE_SCRIPT)
    done = subprocess.run(
        [str(python), str(script), str(spec)], capture_output=True, text=True, timeout=300, cwd=workdir
    )
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return {"version": "0.1.44", "store": "sqlite+faiss", **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--gptcache-entries", type=int, default=10_000)
    parts = ["lookup", "gateway", "pairs"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "redis"], default=["sqlite", "redis"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from sovereign.cache.calibration import load_pairs
    from sovereign.config import load_settings
    from sovereign.rag.embeddings import OnnxMiniLMEmbedder
    from sovereign.testing.redis import redis_server

    settings = load_settings()
    threshold = settings.cache.similarity_threshold
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "threshold": threshold}
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
        workdir = Path(tmp)
        if "lookup" in args.parts:
            with redis_server(workdir / "redis") as redis:
                out["lookup"] = []
                for size in args.sizes:
                    for kind in args.backends:
                        row = asyncio.run(backend_latency(kind, size, args.queries, workdir, redis.url))
                        print(json.dumps(row), file=sys.stderr, flush=True)  # progress: one line per backend
                        out["lookup"].append(row)
        if "gateway" in args.parts:
            out["gateway"] = gateway_latency(workdir, args.requests)
        if "pairs" in args.parts:
            pairs = load_pairs(PAIRS)
            texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
            vectors, _ = OnnxMiniLMEmbedder(settings.embeddings).embed_sync(texts)
            vec = dict(zip(texts, vectors, strict=True))
            out["pairs"] = {
                "ours": ours_on_pairs(pairs, vec, threshold),
                "gptcache": gptcache_on_pairs(pairs, vec, threshold, workdir, args.gptcache_entries),
            }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
