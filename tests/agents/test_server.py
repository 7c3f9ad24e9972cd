"""``sovereign-agent`` through the live gateway with the ``openai`` SDK, on real document memory
(a small corpus ingested with ``sovereign ingest``), the real SmolLM2 and MiniLM."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import LiveServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CORPUS = {
    "json.md": "# json\n\njson.loads(s) deserializes s, a str containing a JSON document, to a Python object.\n"
               "json.dumps(obj) serializes obj to a JSON formatted str.\n",
    "shutil.md": "# shutil\n\nshutil.copy(src, dst) copies the file src to the file or directory dst.\n"
                 "shutil.rmtree(path) deletes an entire directory tree.\n",
}


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("agent-server")
    docs = data / "docs"
    docs.mkdir()
    for name, text in CORPUS.items():
        (docs / name).write_text(text)
    env = {"SOVEREIGN_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "sovereign", "ingest", str(docs)], env=env, check=True,
                   capture_output=True, timeout=300)
    server = start_server(data, {"SOVEREIGN_AGENTS__MAX_TOKENS": "24", "SOVEREIGN_AGENTS__NODE_TIMEOUT_S": "300"})
    yield server
    server.stop()


def test_agent_model_json_and_stream_with_sovereign_field(agent_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=agent_server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    assert "sovereign-agent" in [m.id for m in client.models.list()]
    response = client.chat.completions.create(
        model="sovereign-agent", messages=[{"role": "user", "content": "What does json.loads do?"}],
        max_tokens=24, temperature=0, extra_body={"conversation_id": "e2e-1"},
    )
    extra = response.model_extra or {}
    meta = extra["sovereign"]
    assert response.choices[0].message.content
    assert meta["conversation_id"] == "e2e-1" and meta["sources"] and not meta["degraded"]
    assert meta["sources"][0]["path"].endswith("json.md")
    assert {"router", "planner", "retrieval", "synthesizer", "validator"} <= set(meta["nodes"])
    assert isinstance(meta["grounded"], bool) and meta["validator"]["status"] in {"passed", "failed"}

    stream = client.chat.completions.create(
        model="sovereign-agent", messages=[{"role": "user", "content": "and shutil.copy?"}],
        max_tokens=16, temperature=0, stream=True, extra_body={"conversation_id": "e2e-1"},
    )
    last = None
    text = ""
    for chunk in stream:
        text += "".join(c.delta.content or "" for c in chunk.choices)
        last = chunk
    assert text and last is not None
    assert (last.model_extra or {})["sovereign"]["conversation_id"] == "e2e-1"


def test_agent_bad_conversation_id_is_400(agent_server: LiveServer) -> None:
    body = {"model": "sovereign-agent", "messages": [{"role": "user", "content": "hi"}], "conversation_id": "bad id"}
    response = httpx.post(agent_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "conversation_id"
    body = {"model": "sovereign-agent", "messages": [{"role": "user", "content": "  "}], "stream": True}
    response = httpx.post(agent_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and json.loads(response.text)["error"]["type"] == "invalid_request_error"
