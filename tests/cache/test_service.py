"""The cache service with the real MiniLM embedder, real SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sovereign.cache.backends.redis import RedisCacheBackend
from sovereign.cache.backends.sqlite import SqliteCacheBackend
from sovereign.cache.calibration import calibrate, load_pairs, rates
from sovereign.cache.keys import cache_key
from sovereign.cache.service import ResponseCache
from sovereign.config import load_settings
from sovereign.observability import metrics
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams, Usage

pytestmark = pytest.mark.anyio
PAIRS = Path(__file__).resolve().parents[2] / "data" / "cache_pairs" / "pairs.jsonl"


@pytest.fixture(scope="module")
def embedder() -> OnnxMiniLMEmbedder:
    return OnnxMiniLMEmbedder(load_settings().embeddings)


def key(question: str, tenant: str = "t"):  # type: ignore[no-untyped-def]
    request = GenerationRequest(
        model="m", sampling=SamplingParams(temperature=0), messages=(ChatMessage("user", question),)
    )
    return cache_key(request, tenant=tenant, chat=True)


@pytest.fixture
async def cache(tmp_path: Path, embedder: OnnxMiniLMEmbedder) -> AsyncIterator[ResponseCache]:
    service = ResponseCache(
        SqliteCacheBackend(tmp_path / "c.sqlite3", max_entries=100), embedder, load_settings().cache
    )
    await service.start()
    yield service
    await service.close()


async def store(
    cache: ResponseCache, question: str, answer: str, docs: list[str] | None = None, tenant: str = "t"
) -> None:
    metadata = {"sources": [{"doc_id": d, "chunk_id": f"{d}#0"} for d in docs or []]}
    assert await cache.store(
        key(question, tenant), pieces=[answer], finish_reason="stop", usage=Usage(5, 3), metadata=metadata
    )


async def test_exact_paraphrase_and_near_miss(cache: ResponseCache) -> None:
    await store(cache, "How do I sort a list in ascending order?", "sorted(xs)")
    assert (await cache.lookup(key("How do I sort a list in ascending order?"))).status == "hit-exact"
    para = await cache.lookup(key("How can I sort a list in ascending order?"))
    assert para.status == "hit-semantic" and para.entry is not None and para.entry.text == "sorted(xs)"
    assert (await cache.lookup(key("How do I sort a list in descending order?"))).status == "miss"
    assert (await cache.lookup(key("How can I sort a list in ascending order?", tenant="other"))).status == "miss"


async def test_errors_and_cancellations_are_not_stored(cache: ResponseCache) -> None:
    k = key("q?")
    assert k is not None
    assert not await cache.store(k, pieces=["x"], finish_reason="error", usage=Usage(), metadata=None)
    assert not await cache.store(k, pieces=["  "], finish_reason="stop", usage=Usage(), metadata=None)


async def test_rag_change_notification_evicts_dependent_answers(cache: ResponseCache) -> None:
    await store(cache, "What does the os module do?", "os things", docs=["os.rst"])
    await store(cache, "What does json do?", "json things", docs=["json.rst"])
    assert await cache.on_documents_changed(["os.rst"], "default") == 1
    assert (await cache.lookup(key("What does the os module do?"))).status == "miss"
    assert (await cache.lookup(key("What does json do?"))).status == "hit-exact"


@asynccontextmanager
async def redis_cache(
    redis_proc: Any, embedder: OnnxMiniLMEmbedder, *, timeout_ms: int
) -> AsyncIterator[ResponseCache]:
    """A started cache on the session's redis-server under a fresh key prefix, cleared and closed after."""
    settings = load_settings().cache.model_copy(update={"timeout_ms": timeout_ms})
    backend = RedisCacheBackend(redis_proc.url, max_entries=100, timeout_s=timeout_ms / 1000,
                                prefix=f"t:{uuid.uuid4().hex[:8]}:")
    cache = ResponseCache(backend, embedder, settings)
    await cache.start()
    try:
        yield cache
    finally:
        await cache.clear()
        await cache.close()


@pytest.mark.integration
async def test_redis_down_is_a_counted_miss_and_recovers(redis_proc: Any, embedder: OnnxMiniLMEmbedder) -> None:
    async with redis_cache(redis_proc, embedder, timeout_ms=200) as cache:
        await store(cache, "How do I copy a file?", "shutil.copy")
        assert (await cache.lookup(key("How do I copy a file?"))).status == "hit-exact"
        errors = metrics.CACHE_ERRORS.labels(backend="redis")._value.get()
        redis_proc.stop()
        try:
            began = time.perf_counter()
            assert (await cache.lookup(key("How do I copy a file?"))).status == "miss"
            assert not await cache.store(key("x?"), pieces=["y"], finish_reason="stop", usage=Usage(), metadata=None)
            assert time.perf_counter() - began < 2.0  # bounded: no retries, no hang
            assert metrics.CACHE_ERRORS.labels(backend="redis")._value.get() >= errors + 2
        finally:
            redis_proc.start()
        await store(cache, "How do I move a file?", "shutil.move")  # the same client reconnects
        assert (await cache.lookup(key("How do I move a file?"))).status == "hit-exact"


async def wait_for_status(cache: ResponseCache, question: str, status: str, within_s: float = 5.0) -> Any:
    """Look ``question`` up until its status is ``status`` or ``within_s`` passed; the last lookup."""
    deadline = time.monotonic() + within_s
    while True:
        found = await cache.lookup(key(question))
        if found.status == status or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_entries_stored_after_redis_restarts_empty_are_semantic_hits(
    redis_proc: Any, embedder: OnnxMiniLMEmbedder
) -> None:
    """Redis restarting empty restarts its sequence at 1: the epoch tells the process to resync."""
    async with redis_cache(redis_proc, embedder, timeout_ms=1000) as cache:
        await store(cache, "How do I delete a file?", "os.remove")
        await store(cache, "How do I rename a file?", "os.rename")
        assert (await cache.lookup(key("How can I delete a file?"))).status == "hit-semantic"
        redis_proc.stop()
        redis_proc.start()  # no persistence: everything, the sequence number included, is gone
        assert (await cache.lookup(key("How can I delete a file?"))).status == "miss"
        # no write yet: only the changed epoch (read by that lookup) can tell the process to resync
        stale = key("How do I rename a file?").exact
        deadline = time.monotonic() + 10
        while stale in cache.backend.index and time.monotonic() < deadline:  # type: ignore[attr-defined]
            await cache.lookup(key("How can I delete a file?"))  # the first one may meet the dropped connection
            await asyncio.sleep(0.05)
        assert stale not in cache.backend.index  # type: ignore[attr-defined]
        await store(cache, "How do I copy a file?", "shutil.copy")
        assert (await cache.lookup(key("How do I copy a file?"))).status == "hit-exact"
        found = await wait_for_status(cache, "How can I copy a file?", "hit-semantic")
        assert found.status == "hit-semantic" and found.entry is not None and found.entry.text == "shutil.copy"
        assert (await cache.lookup(key("How can I rename a file?"))).status == "miss"  # stale vectors dropped


@pytest.mark.integration
async def test_a_paused_redis_is_a_counted_miss_within_the_budget(
    redis_proc: Any, embedder: OnnxMiniLMEmbedder
) -> None:
    """A Redis that accepts connections but answers nothing (SIGSTOP) costs at most the time budget."""
    async with redis_cache(redis_proc, embedder, timeout_ms=100) as cache:
        await store(cache, "How do I copy a file?", "shutil.copy")
        assert (await cache.lookup(key("How do I copy a file?"))).status == "hit-exact"
        await cache.embed("How can I copy a file?")  # warm the embedder: time only the cache
        errors = metrics.CACHE_ERRORS.labels(backend="redis")._value.get()
        with redis_proc.paused():
            began = time.perf_counter()
            exact = await cache.lookup(key("How do I copy a file?"))
            semantic = await cache.lookup(key("How can I copy a file?"))
            elapsed = time.perf_counter() - began
        assert exact.status == "miss" and semantic.status == "miss"
        # 2 lookups x (exact read + candidate fetch) x 100 ms, plus two embeddings; no retries, no hang
        assert elapsed < 0.4 + 0.4, elapsed
        assert metrics.CACHE_ERRORS.labels(backend="redis")._value.get() >= errors + 2
        assert (await wait_for_status(cache, "How do I copy a file?", "hit-exact")).status == "hit-exact"
        assert (await cache.lookup(key("How can I copy a file?"))).status == "hit-semantic"


def test_labelled_pairs_calibration(embedder: OnnxMiniLMEmbedder) -> None:
    """>= 300 pairs with provenance; at the default threshold false hits <= 1%, hits >= 85%."""
    pairs = load_pairs(PAIRS)
    assert len(pairs) >= 300 and all(p["source"].startswith("python3.11-doc:") for p in pairs)
    assert {p["kind"] for p in pairs if p["label"] == "miss"} >= {"negation", "order", "entity", "number", "version"}
    a, _ = embedder.embed_sync([p["a"] for p in pairs])
    b, _ = embedder.embed_sync([p["b"] for p in pairs])
    cosines = np.einsum("ij,ij->i", a, b)
    default = load_settings().cache.similarity_threshold
    result = rates(pairs, cosines, default, guard=True)
    assert result["false_hit_rate"] <= 0.01, result
    assert result["hit_rate"] >= 0.85, result
    # calibrate() sweeps 0.80..0.99: the lowest threshold within the 1% budget is at or below the default
    calibrated = calibrate(pairs, cosines, max_false_hit=0.01, guard=True)
    chosen = calibrated["chosen"]
    assert chosen is not None and chosen["threshold"] <= default, chosen
    assert chosen["false_hit_rate"] <= 0.01 and chosen["hit_rate"] >= result["hit_rate"], chosen
    at_default = next(row for row in calibrated["sweep"] if row["threshold"] == round(default, 2))
    assert at_default == result
    sweep = [row["hit_rate"] for row in calibrated["sweep"]]
    assert sweep == sorted(sweep, reverse=True)  # a higher threshold never serves more
    # without the contrast guard, cosine alone cannot keep near-misses out at the default
    assert rates(pairs, cosines, default, guard=False)["false_hit_rate"] > 0.05
