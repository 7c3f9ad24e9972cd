"""RAG answers through the real app: cached (scoped by the collection's index version) and evicted
when a document they cite is re-ingested or deleted (real RagService, real SmolLM2, real SQLite)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovereign.cache.keys import CacheKey
from sovereign.cache.service import ResponseCache
from sovereign.config import load_settings
from sovereign.server.app import create_app
from tests.rag.conftest import CORPUS

pytestmark = pytest.mark.anyio
HEADER = "x-sovereign-cache"
ASK = {
    "model": "sovereign-rag",
    "max_tokens": 8,
    "temperature": 0,
    "messages": [{"role": "user", "content": "How do I find an insertion point in a sorted list?"}],
}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path, Any, Path]]:
    """The real app (ASGI) with the default sqlite cache; yields (client, allowed root, state, cache file)."""
    root = tmp_path / "allowed"
    root.mkdir()
    shutil.copy(CORPUS / "library" / "bisect.html", root / "bisect.html")
    data = tmp_path / "data"
    settings = load_settings(
        data_dir=data, rag={"allowed_roots": [root], "top_k": 2}, engine={"n_ctx": 1024, "n_threads": 1}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.loader
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=300) as http:
            yield http, root, app.state.sovereign, data / "cache.sqlite3"


def stored_keys(path: Path) -> list[tuple[str, str]]:
    """``(entry key, doc id)`` rows of the provenance table, read from the cache file itself."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return sorted(db.execute("SELECT key, doc_id FROM provenance").fetchall())


async def cached_key(cache: ResponseCache, path: Path) -> tuple[CacheKey, str]:
    """The single stored entry's key (as the service looks it up) and the document it cites."""
    rows = stored_keys(path)
    assert len(rows) == 1, rows
    entry = await cache.backend.get(rows[0][0])
    assert entry is not None
    return CacheKey(scope=entry.scope, exact=entry.key, query=entry.query), rows[0][1]


async def test_rag_answer_is_cached_and_evicted_when_its_document_changes(
    gateway: tuple[httpx.AsyncClient, Path, Any, Path],
) -> None:
    http, root, state, cache_file = gateway
    cache = state.cache
    assert cache is not None
    r = await http.post("/v1/documents", json={"path": str(root)})
    assert r.status_code == 200 and r.json()["added"] == 1, r.text

    first = await http.post("/v1/chat/completions", json=ASK)
    assert first.status_code == 200, first.text
    assert first.headers[HEADER] == "miss"
    again = await http.post("/v1/chat/completions", json=ASK)
    assert again.headers[HEADER] == "hit-exact"
    assert again.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert again.json()["sovereign"]["sources"] == first.json()["sovereign"]["sources"]
    key, doc_id = await cached_key(cache, cache_file)
    assert doc_id == first.json()["sovereign"]["sources"][0]["doc_id"]
    assert (await cache.lookup(key)).status == "hit-exact"

    # re-ingest a changed version of the cited document: its answers are evicted before the POST returns
    page = root / "bisect.html"
    page.write_text(page.read_text().replace("</body>", "<p>insort keeps a list sorted.</p></body>"))
    r = await http.post("/v1/documents", json={"path": str(root)})
    assert r.status_code == 200 and r.json()["updated"] == 1, r.text
    assert await cache.backend.count() == 0 and stored_keys(cache_file) == []
    assert (await cache.lookup(key)).status == "miss"  # exact and semantic, in the old scope too

    # the new version is cached afresh; deleting the document evicts that answer as well
    assert (await http.post("/v1/chat/completions", json=ASK)).headers[HEADER] == "miss"
    assert (await http.post("/v1/chat/completions", json=ASK)).headers[HEADER] == "hit-exact"
    key, doc_id = await cached_key(cache, cache_file)
    assert (await http.delete(f"/v1/documents/{doc_id}")).status_code == 200
    assert await cache.backend.count() == 0
    assert (await cache.lookup(key)).status == "miss"
