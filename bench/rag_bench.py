"""Document-memory benchmark on the Python 3.11 documentation; prints one JSON object.

Run: ``.venv/bin/python bench/rag_bench.py [--pages 10] [--vectors 200000] [--queries 100]``
(``apt-get install python3.11-doc`` first; ``--pages 0`` = every HTML page, ~6,000 chunks: about
20 minutes at 5 chunks/s on 2 busy cores, so the default is a seeded 10-page sample).

1. Ingest (embedded store, real MiniLM int8): pages/s, chunks/s, and that throughput as a fraction
   of the embedding model's raw throughput on the same chunk texts (same batch size, same
   length sorting; measured right after, on a seeded sample of the chunks); then the second
   (unchanged) run's time and the speed-up.
2. Hybrid search latency p50/p99 (embed query + BM25 + ANN + RRF + fetch) on the embedded store
   and on pgvector (the collection copied over with ``migrate-store``'s copy, no re-embedding).
3. ANN recall@10 against exact (numpy dot-product) search: (a) on the corpus's own embeddings,
   queries = embedded questions and perturbed chunk vectors, embedded store vs pgvector; (b) on
   ``--vectors`` vectors (corpus embeddings plus Gaussian perturbations, re-normalised, so the set
   keeps the corpus's cluster structure): usearch (the embedded store's index, same parameters),
   pgvector HNSW (same m / ef_construction / ef_search as the settings) and sqlite-vec (exact
   brute force inside SQLite, the alternative considered) side by side.
Bounded: every stage is sized by its flags; defaults finish in about 10 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sovereign.config import load_settings  # noqa: E402
from sovereign.rag.ingest import SourceFile, walk  # noqa: E402
from sovereign.rag.service import RagService  # noqa: E402

DOCS = Path("/usr/share/doc/python3.11/html")
QUESTIONS = [
    "What does functools.lru_cache do with its maxsize argument?",
    "How do I read a CSV file with a header row?", "difference between a list and a tuple",
    "How do I create a virtual environment?", "asyncio gather run tasks concurrently",
    "What is the Global Interpreter Lock?", "format a datetime as ISO 8601 string",
    "How to sort a dictionary by value", "What does the with statement do?", "regular expression named groups",
    "subprocess run capture output", "How are default argument values evaluated?",
    "What is a generator expression?", "pathlib glob recursive", "json dumps indent sort_keys",
    "How do I write a context manager with contextlib?", "dataclass frozen field default_factory",
    "typing Protocol structural subtyping", "socket connect timeout", "heapq priority queue push pop",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def recall_at_10(found: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(e[:10].tolist())) / 10 for f, e in zip(found, exact, strict=True)]))


async def ingest_stage(service: RagService, files: list[SourceFile]) -> dict[str, Any]:
    first = await service.ingest_files(files, "pydocs")
    if first.chunks_embedded == 0:  # --data-dir reused: nothing was embedded, no rate to report
        return {"reused_store": True, "pages": len(files), "unchanged": first.unchanged,
                "seconds": round(first.seconds, 2)}
    second = await service.ingest_files(files, "pydocs")
    chunks = first.chunks_embedded
    # raw model throughput on a seeded sample of the same texts, same batching as ingestion
    texts: list[str] = []
    async for doc, doc_chunks, _ in service.store.iter_documents("pydocs"):
        texts += [c.embed_text(doc.title) for c in doc_chunks]
    sample = random.Random(0).sample(texts, min(len(texts), 256))
    began = time.perf_counter()
    service.embedder.embed_sync(sample)  # type: ignore[attr-defined]
    raw_rate = len(sample) / (time.perf_counter() - began)
    ingest_rate = chunks / first.seconds
    return {
        "pages": len(files), "chunks": chunks, "failed": len(first.failed), "first_run_s": round(first.seconds, 2),
        "pages_per_s": round(len(files) / first.seconds, 2), "chunks_per_s": round(ingest_rate, 2),
        "raw_embed_chunks_per_s": round(raw_rate, 2), "fraction_of_raw": round(ingest_rate / raw_rate, 3),
        "second_run_s": round(second.seconds, 3), "second_run_embedded": second.chunks_embedded,
        "second_run_speedup": round(first.seconds / max(second.seconds, 1e-9), 1),
    }


async def latency(service: RagService, queries: list[str]) -> dict[str, float]:
    times = []
    for q in queries:
        began = time.perf_counter()
        await service.retriever.search(q, top_k=5, collection="pydocs")
        times.append((time.perf_counter() - began) * 1000)
    return {"p50_ms": round(pct(times, 50), 2), "p99_ms": round(pct(times, 99), 2)}


async def corpus_recall(service: RagService, pg: RagService | None, n_queries: int) -> dict[str, Any]:
    ids, vectors = [], []
    async for _, chunks, vecs in service.store.iter_documents("pydocs"):
        ids += [c.chunk_id for c in chunks]
        vectors.append(vecs)
    matrix = np.concatenate(vectors)
    rng = np.random.default_rng(1)
    qv, _ = await service.embedder.embed(QUESTIONS)
    picks = matrix[rng.choice(len(matrix), n_queries - len(QUESTIONS))]
    noisy = picks + rng.normal(0, 0.05, picks.shape).astype(np.float32)
    queries = np.concatenate([qv, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)]).astype(np.float32)
    exact = np.argsort(-(queries @ matrix.T), axis=1)[:, :10]
    index_of = {cid: i for i, cid in enumerate(ids)}
    out: dict[str, Any] = {"vectors": len(matrix), "queries": len(queries)}
    for name, svc in (("embedded", service), ("pgvector", pg)):
        if svc is None:
            continue
        found, times = [], []
        for q in queries:
            began = time.perf_counter()
            ranked = await svc.store.vector_search(q, 10, collection="pydocs")
            times.append((time.perf_counter() - began) * 1000)
            found.append([index_of[cid] for cid, _ in ranked])
        out[name] = {"recall_at_10": round(recall_at_10(found, exact), 4), "p50_ms": round(pct(times, 50), 3)}
    return out


def big_set(base: np.ndarray, n: int, sigma: float, seed: int) -> np.ndarray:
    """``n`` unit vectors: corpus embeddings plus N(0, sigma^2) per dimension, re-normalised.

    sigma 0.02 (noise norm ~0.39: cosine ~0.93 to the source chunk, a paraphrase's distance) keeps
    the corpus's structure; sigma 0.08 (noise norm ~1.6, larger than the signal) makes the set
    nearly isotropic noise, the worst case for any graph index. Both are reported.
    """
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), n)]
    out = picks + rng.normal(0, sigma, picks.shape).astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def usearch_big(data: np.ndarray, queries: np.ndarray, exact: np.ndarray, rag: Any) -> dict[str, Any]:
    from usearch.index import Index

    index = Index(ndim=data.shape[1], metric="cos", dtype="f32", connectivity=rag.ann_connectivity,
                  expansion_add=rag.ann_expansion_add, expansion_search=rag.ann_expansion_search)
    began = time.perf_counter()
    index.add(np.arange(len(data), dtype=np.uint64), data)
    build = time.perf_counter() - began
    result: dict[str, Any] = {"build_s": round(build, 1)}
    for ef in sorted({64, 96, rag.ann_expansion_search}):
        index.expansion_search = ef
        found, times = [], []
        for q in queries:
            t = time.perf_counter()
            m = index.search(q, 10)
            times.append((time.perf_counter() - t) * 1000)
            found.append([int(k) for k in m.keys])
        result[f"ef_search={ef}"] = {"recall_at_10": round(recall_at_10(found, exact), 4),
                                     "p50_ms": round(pct(times, 50), 3), "p99_ms": round(pct(times, 99), 3)}
    return result


def sqlite_vec_big(data: np.ndarray, queries: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    import sqlite3

    import sqlite_vec

    db = sqlite3.connect(":memory:")
    if not hasattr(db, "enable_load_extension"):
        db.close()
        return {"skipped": "this Python's sqlite3 was built without loadable-extension support"}
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{data.shape[1]}] distance_metric=cosine)")
    db.executemany("INSERT INTO v (rowid, embedding) VALUES (?, ?)", ((i, r.tobytes()) for i, r in enumerate(data)))
    found, times = [], []
    for q in queries[:20]:
        t = time.perf_counter()
        rows = db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = 10", (q.tobytes(),)).fetchall()
        times.append((time.perf_counter() - t) * 1000)
        found.append([r[0] for r in rows])
    db.close()
    return {"recall_at_10": round(recall_at_10(found, exact[:20]), 4), "p50_ms": round(pct(times, 50), 2),
            "note": "exact brute force (vec0 KNN), 20 queries"}


async def pg_big(dsn: str, data: np.ndarray, queries: np.ndarray, exact: np.ndarray, rag: Any) -> dict[str, Any]:
    import psycopg
    from pgvector.psycopg import register_vector_async

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await register_vector_async(conn)
        await conn.execute("DROP TABLE IF EXISTS big")
        await conn.execute(f"CREATE TABLE big (id int PRIMARY KEY, embedding vector({data.shape[1]}))")
        began = time.perf_counter()
        async with conn.cursor().copy("COPY big (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "vector"])
            for i, row in enumerate(data):
                await copy.write_row((i, row))
        load = time.perf_counter() - began
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        began = time.perf_counter()
        await conn.execute(f"CREATE INDEX ON big USING hnsw (embedding vector_cosine_ops) "
                           f"WITH (m = {rag.pg_hnsw_m}, ef_construction = {rag.pg_hnsw_ef_construction})")
        build = time.perf_counter() - began
        await conn.execute(f"SET hnsw.ef_search = {rag.pg_hnsw_ef_search}")
        found, times = [], []
        for q in queries:
            t = time.perf_counter()
            cur = await conn.execute("SELECT id FROM big ORDER BY embedding <=> %s LIMIT 10", (q,))
            rows = await cur.fetchall()
            times.append((time.perf_counter() - t) * 1000)
            found.append([r[0] for r in rows])
        await conn.execute("DROP TABLE big")
    return {"load_s": round(load, 1), "build_s": round(build, 1), "ef_search": rag.pg_hnsw_ef_search,
            "recall_at_10": round(recall_at_10(found, exact), 4), "p50_ms": round(pct(times, 50), 3),
            "p99_ms": round(pct(times, 99), 3)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from sovereign.cli.migrate_store import copy_collection
    from sovereign.rag.stores.pgvector import PgVectorStore
    from sovereign.testing.postgres import embedded_postgres

    if not DOCS.is_dir():
        raise SystemExit("install python3.11-doc first: apt-get install python3.11-doc")
    pages = [f for f in walk([DOCS]) if f.real.suffix == ".html"]
    total_pages = len(pages)
    if args.pages and args.pages < len(pages):
        pages = sorted(random.Random(0).sample(pages, args.pages), key=lambda f: f.logical)
    work = Path(tempfile.mkdtemp(prefix="ragbench-"))
    work.chmod(0o755)  # embedded-postgres runs as an unprivileged user when started by root
    data_dir = args.data_dir or work / "data"
    report: dict[str, Any] = {"corpus": str(DOCS), "html_pages_in_corpus": total_pages, "cpu_count": os.cpu_count(),
                              "load_avg_at_start": os.getloadavg()}
    stages: dict[str, float] = {}
    report["stage_end_s"] = stages
    try:
        settings = load_settings(data_dir=data_dir)
        service = await RagService.open(settings)
        try:
            t0 = time.perf_counter()
            report["ingest"] = await ingest_stage(service, pages)
            stages["ingest"] = time.perf_counter() - t0
            queries = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.queries)]
            await service.retriever.search(QUESTIONS[0], top_k=5, collection="pydocs")  # warm-up
            report["hybrid_search"] = {"embedded": await latency(service, queries)}
            stages["latency_embedded"] = time.perf_counter() - t0
            with embedded_postgres(work / "pg") as dsn:
                stages["pg_start"] = time.perf_counter() - t0
                pg_store = PgVectorStore(dsn, schema="bench", m=settings.rag.pg_hnsw_m,
                                         ef_construction=settings.rag.pg_hnsw_ef_construction,
                                         ef_search=settings.rag.pg_hnsw_ef_search)
                pg = await RagService.open(settings, embedder=service.embedder, store=pg_store)
                try:
                    began = time.perf_counter()
                    await copy_collection(service.store, pg.store, "pydocs")
                    report["migrate_store_s"] = round(time.perf_counter() - began, 1)
                    report["hybrid_search"]["pgvector"] = await latency(pg, queries)
                    stages["pg_migrate_latency"] = time.perf_counter() - t0
                    report["ann_corpus"] = await corpus_recall(service, pg, args.recall_queries)
                    stages["ann_corpus"] = time.perf_counter() - t0
                    base = []
                    async for _, _, vecs in service.store.iter_documents("pydocs"):
                        base.append(vecs)
                    corpus = np.concatenate(base)
                    big: dict[str, Any] = {"vectors": args.vectors, "queries": args.recall_queries}
                    for sigma in args.noise:
                        data = big_set(corpus, args.vectors, sigma, seed=2)
                        qs = big_set(corpus, args.recall_queries, sigma, seed=3)
                        exact = np.argsort(-(qs @ data.T), axis=1)[:, :10]
                        row: dict[str, Any] = {"embedded_usearch": usearch_big(data, qs, exact, settings.rag)}
                        stages[f"usearch_big_{sigma}"] = time.perf_counter() - t0
                        row["pgvector_hnsw"] = await pg_big(dsn, data, qs, exact, settings.rag)
                        stages[f"pg_big_{sigma}"] = time.perf_counter() - t0
                        row["sqlite_vec_exact"] = sqlite_vec_big(data, qs, exact)
                        big[f"noise_sigma={sigma}"] = row
                    report["ann_large"] = big
                finally:
                    await pg.close()
        finally:
            await service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=10, help="HTML pages to ingest, a seeded sample (0 = all).")
    parser.add_argument("--vectors", type=int, default=200_000, help="Size of the large ANN set.")
    parser.add_argument("--queries", type=int, default=100, help="Hybrid-search queries timed per store.")
    parser.add_argument("--recall-queries", type=int, default=200, help="Queries for recall@10.")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.08],
                        help="Per-dimension noise of the large synthetic sets (see big_set).")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Keep the ingested store here (reused by the next run: parts 2-3 without re-embedding).")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
