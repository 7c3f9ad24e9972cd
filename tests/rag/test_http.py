"""``/v1/documents``, ``/v1/search`` and the ``sovereign-rag`` chat model through the real app (ASGI)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sovereign.config import load_settings
from sovereign.server.app import create_app
from tests.rag.conftest import CORPUS

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    root = tmp_path / "allowed"
    root.mkdir()
    shutil.copy(CORPUS / "library" / "bisect.html", root / "bisect.html")
    settings = load_settings(data_dir=tmp_path / "data", rag={"allowed_roots": [root], "top_k": 2},
                             engine={"n_ctx": 1024, "n_threads": 1})  # 1 thread: no OpenMP spin on busy cores
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.loader  # models loaded
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=300) as http:
            yield http, root


async def test_documents_lifecycle_and_search(client: tuple[httpx.AsyncClient, Path], tmp_path: Path) -> None:
    http, root = client
    r = await http.post("/v1/documents", json={"path": str(root)})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 1 and r.json()["index_version"] >= 1
    upload = base64.b64encode(b"# Otters\nSea otters hold hands while sleeping.\n").decode()
    r = await http.post("/v1/documents", json={"files": [{"filename": "otters.md", "content_base64": upload}],
                                               "collection": "notes"})
    assert r.status_code == 200 and r.json()["added"] == 1

    listed = (await http.get("/v1/documents")).json()["data"]
    assert sorted(d["path"] for d in listed) == sorted([str(root / "bisect.html"), "upload/otters.md"])
    r = await http.post("/v1/search", json={"query": "otters sleeping", "top_k": 2, "collection": "notes"})
    assert r.status_code == 200
    body = r.json()
    assert body["data"][0]["path"] == "upload/otters.md" and body["index_version"] >= 1
    assert {"chunk_id", "doc_id", "title", "score", "text"} <= set(body["data"][0])

    otter_id = next(d["id"] for d in listed if d["path"] == "upload/otters.md")
    assert (await http.delete(f"/v1/documents/{otter_id}")).status_code == 200
    r = await http.delete(f"/v1/documents/{otter_id}")  # bad input: already deleted
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = await http.post("/v1/search", json={"query": "otters", "collection": "notes"})
    assert r.json()["data"] == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/documents", {"path": "/etc"}, 403),  # bad input: server path outside the allowed roots
        ("/v1/documents", {"path": "ROOT/../../.."}, 403),  # bad input: escaping the root with ..
        ("/v1/documents", {}, 400),  # bad input: neither path nor files
        ("/v1/documents", {"files": [{"filename": "a.md", "content_base64": "%%%"}]}, 400),  # bad base64
        ("/v1/documents", {"files": [{"filename": "a.md", "content_base64": ""}], "collection": "a/b"}, 400),
        ("/v1/search", {"query": ""}, 400),  # bad input: empty query
        ("/v1/search", {"query": "x", "top_k": 0}, 400),  # bad input: top_k <= 0
        ("/v1/search", {"query": "x", "collection": "missing"}, 404),  # bad input: unknown collection
    ],
)
async def test_bad_requests(client: tuple[httpx.AsyncClient, Path], path: str, body: dict[str, object],
                            status: int) -> None:
    http, root = client
    if isinstance(body.get("path"), str):
        body = {**body, "path": str(body["path"]).replace("ROOT", str(root))}
    r = await http.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]
    assert (await http.get("/v1/documents")).json()["data"] == []  # the store is unchanged


async def test_sovereign_rag_chat_carries_sources_json_and_sse(client: tuple[httpx.AsyncClient, Path]) -> None:
    http, root = client
    assert (await http.post("/v1/documents", json={"path": str(root)})).status_code == 200
    ask = {"model": "sovereign-rag", "max_tokens": 8, "temperature": 0,
           "messages": [{"role": "user", "content": "How do I find an insertion point in a sorted list?"}]}
    r = await http.post("/v1/chat/completions", json=ask)
    assert r.status_code == 200, r.text
    extra = r.json()["sovereign"]
    assert extra["sources"][0]["path"].endswith("bisect.html") and extra["collection"] == "default"
    async with http.stream("POST", "/v1/chat/completions", json={**ask, "stream": True}) as s:
        events = [line[6:] async for line in s.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    finals = [json.loads(e) for e in events[:-1] if "sovereign" in json.loads(e)]
    assert len(finals) == 1 and finals[0]["sovereign"]["sources"] == extra["sources"]


async def test_multipart_upload_ingests_files_and_json_still_works(client: tuple[httpx.AsyncClient, Path]) -> None:
    http, _root = client
    files = [("files", ("otters.md", b"# Otters\nSea otters hold hands while sleeping.\n", "text/markdown")),
             ("files", ("../walrus.txt", b"Walrus tusks grow all life long.\n", "text/plain"))]
    r = await http.post("/v1/documents", files=files, data={"collection": "notes"})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == 2 and r.json()["collection"] == "notes" and r.json()["index_version"] >= 1
    listed = (await http.get("/v1/documents", params={"collection": "notes"})).json()["data"]
    assert sorted(d["path"] for d in listed) == ["upload/otters.md", "upload/walrus.txt"]  # base names only
    hits = (await http.post("/v1/search", json={"query": "walrus tusks", "collection": "notes"})).json()["data"]
    assert hits[0]["path"] == "upload/walrus.txt"
    again = await http.post("/v1/documents", files=files[:1], data={"collection": "notes"})
    assert again.status_code == 200 and again.json()["unchanged"] == 1  # same bytes: nothing re-embedded
    upload = base64.b64encode(b"Beavers build dams.\n").decode()  # the JSON form keeps working
    r = await http.post("/v1/documents", json={"files": [{"filename": "beavers.txt", "content_base64": upload}],
                                               "collection": "notes"})
    assert r.status_code == 200 and r.json()["added"] == 1


@pytest.mark.parametrize(
    ("files", "data"),
    [
        ([], {"collection": "notes"}),  # bad input: a multipart body with no file
        ([("files", ("..", b"x", "text/plain"))], {}),  # bad input: a filename that is no name
        ([("files", ("a.md", b"x", "text/plain"))], {"path": "/etc"}),  # bad input: unknown form field
        ([("files", ("a.md", b"# A\nalpha\n", "text/plain"))], {"collection": "a/b"}),  # bad collection name
    ],
)
async def test_bad_multipart_uploads(client: tuple[httpx.AsyncClient, Path],
                                     files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str]) -> None:
    http, _root = client
    if files:
        r = await http.post("/v1/documents", files=files, data=data)
    else:  # httpx sends urlencoded without files: build the empty multipart body by hand
        r = await http.post("/v1/documents", content=b"--b\r\nContent-Disposition: form-data; name=\"collection\""
                            b"\r\n\r\nnotes\r\n--b--\r\n", headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["message"]
    assert (await http.get("/v1/documents")).json()["data"] == []  # the store is unchanged


async def test_listing_an_unknown_collection_is_404(client: tuple[httpx.AsyncClient, Path]) -> None:
    http, root = client
    assert (await http.post("/v1/documents", json={"path": str(root)})).status_code == 200
    assert len((await http.get("/v1/documents", params={"collection": "default"})).json()["data"]) == 1
    r = await http.get("/v1/documents", params={"collection": "nope"})  # bad input: unknown collection
    assert r.status_code == 404, r.text
    assert r.json()["error"]["type"] == "not_found_error" and "nope" in r.json()["error"]["message"]
    r = await http.get("/v1/documents", params={"collection": "../etc"})  # bad input: invalid name
    assert r.status_code == 400 and r.json()["error"]["param"] == "collection"
    r = await http.post("/v1/documents", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"  # bad input: not JSON
