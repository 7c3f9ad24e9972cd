"""The cache start-up stage (sqlite default, hooked to document memory once) and ``sovereign cache stats|clear``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from sovereign.backends.registry import ModelRegistry
from sovereign.cache.keys import cache_key
from sovereign.cli.main import app
from sovereign.config import load_settings
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.server.startup import start_cache
from sovereign.server.state import AppState
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams, Usage

pytestmark = pytest.mark.anyio


class FakeRag:
    """Stands in for the document-memory service's change-notification surface only."""

    def __init__(self) -> None:
        self.on_change: list[Any] = []


async def test_stage_builds_sqlite_cache_and_hooks_document_memory_once(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    registry = ModelRegistry()
    registry.add_embedding(OnnxMiniLMEmbedder(settings.embeddings))
    rag = FakeRag()
    state = AppState.build(settings, registry)
    state.rag = cast(Any, rag)  # document memory starts before the cache (sovereign.server.startup)
    close = await start_cache(state)
    assert close is not None
    try:
        assert state.cache is not None and state.cache.backend.name == "sqlite"
        assert (tmp_path / "cache.sqlite3").exists()
        assert len(rag.on_change) == 1
        cache = state.cache
        request = GenerationRequest(
            model="m", sampling=SamplingParams(temperature=0), messages=(ChatMessage("user", "What is doc?"),)
        )
        key = cache_key(request, tenant="anonymous", chat=True)
        assert key is not None
        sources = {"sources": [{"doc_id": "doc", "chunk_id": "doc#0"}]}
        assert await cache.store(key, pieces=["a doc"], finish_reason="stop", usage=Usage(3, 2), metadata=sources)
        # called the way RagService._notify calls it: callback(doc_ids, collection)
        assert await rag.on_change[0](["other"], "default") == 0
        assert await rag.on_change[0](["doc"], "default") == 1
        assert (await cache.lookup(key)).status == "miss" and await cache.backend.count() == 0
        with pytest.raises(TypeError):  # bad input: swapped arguments would read "default" as ids
            rag.on_change[0]("default", ["doc"])
    finally:
        await close()


def test_cli_stats_and_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVEREIGN_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    stats = runner.invoke(app, ["cache", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["entries"] == 0
    cleared = runner.invoke(app, ["cache", "clear", "--yes"])
    assert cleared.exit_code == 0 and "0 entries" in cleared.output
