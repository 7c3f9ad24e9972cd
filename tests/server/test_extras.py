"""A core-only install (no extras) serves chat and embeddings; a missing extra is named in the error.

The extras' drivers are hidden from the server process by :mod:`sovereign.testing.without_extras`
(``import usearch`` then fails as on a machine where ``sovereign[rag]`` was never installed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sovereign.errors import MissingExtraError
from sovereign.extras import EXTRAS, require
from sovereign.testing.without_extras import EXTRA_MODULES
from tests.conftest import python_for, start_server

ROOT = Path(__file__).resolve().parents[2]


def test_every_hidden_extra_is_a_declared_extra() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert set(EXTRA_MODULES) == set(EXTRAS)
    for extra in EXTRAS:
        assert f"\n{extra} = [" in pyproject, extra


def test_require_names_the_extra_and_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "usearch", None)  # bad input: a feature whose driver is absent
    with pytest.raises(MissingExtraError, match=r"needs the 'rag' extra .*pip install 'sovereign\[rag\]'") as exc:
        require("usearch", extra="rag", feature="the embedded vector store")
    assert exc.value.extra == "rag" and exc.value.code == "missing_extra"


@pytest.mark.integration
@pytest.mark.slow
def test_core_only_gateway_serves_chat_and_embeddings_and_names_missing_extras(tmp_path: Path) -> None:
    server = start_server(tmp_path / "core", {"SOVEREIGN_ENGINE__N_CTX": "1024"}, core_only=True)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            chat = http.post("/v1/chat/completions", json={
                "model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hi."}]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["usage"]["completion_tokens"] >= 1
            emb = http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["hello"]})
            assert emb.status_code == 200 and len(emb.json()["data"][0]["embedding"]) == 384
            models = {m["id"] for m in http.get("/v1/models").json()["data"]}
            assert "sovereign-agent" not in models and "sovereign-rag" not in models
            docs = http.post("/v1/search", json={"query": "anything"})
            assert docs.status_code == 503
            assert "pip install 'sovereign[rag]'" in docs.json()["error"]["message"]
            again = http.post("/v1/chat/completions", json={  # the exact cache layer still works
                "model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hi."}]})
            assert again.headers["x-sovereign-cache"] == "hit-exact"
    finally:
        server.stop()
    assert "pip install 'sovereign[agents]'" in server.log.read_text()


@pytest.mark.integration
def test_core_only_cli_names_the_missing_extra(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\nSome text.\n")
    env = {"SOVEREIGN_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*python_for(True), "ingest", str(docs)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "needs the 'rag' extra" in done.stderr and "pip install 'sovereign[rag]'" in done.stderr
