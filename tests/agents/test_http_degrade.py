"""Failure isolation through the HTTP API: a node that fails or times out still gives a 200 chat
completion whose ``sovereign`` field carries the warning, in JSON and in SSE (never a 500)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovereign.agents.backend import AgentBackend
from sovereign.agents.state import AgentDeps
from sovereign.backends.registry import ModelRegistry
from sovereign.config import load_settings
from sovereign.server.app import create_app
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever, failing_node

pytestmark = pytest.mark.anyio

DOCS = {"json.html": "The json module encodes Python objects as JSON text and decodes JSON text into objects."}
BODY = {"model": "sovereign-agent", "max_tokens": 32,
        "messages": [{"role": "user", "content": "What does the json module do?"}]}
Client = Callable[[dict[str, Any]], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Client]:
    """``await gateway(nodes)``: an in-process gateway serving ``sovereign-agent`` with ``nodes``
    overriding the pipeline's node adapters, and a fake engine and store under it."""
    opened: list[tuple[AgentBackend, httpx.AsyncClient]] = []

    async def build(nodes: dict[str, Any]) -> httpx.AsyncClient:
        settings = load_settings(data_dir=tmp_path, agents={"checkpointer": "memory", "node_timeout_s": 0.05})
        registry = ModelRegistry()
        engine = FakeChatModel(name=settings.engine.model_name)
        registry.add_chat(engine)
        deps = AgentDeps(model=engine, retriever=lambda: FakeRetriever(DOCS), embedder=FakeEmbedder(),
                         settings=settings.agents)
        agent = AgentBackend(deps, tmp_path, nodes=nodes)
        registry.add_chat(agent)
        await agent.start()  # ASGITransport runs no lifespan: start what it would have started
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, registry)),
                                   base_url="http://gateway")
        opened.append((agent, client))
        return client

    yield build
    for agent, client in opened:
        await client.aclose()
        await agent.close()


@pytest.mark.parametrize("node", ["router", "planner", "retrieval", "synthesizer", "validator"])
async def test_failing_node_is_a_200_with_the_warning(gateway: Client, node: str) -> None:
    client = await gateway({node: failing_node("error")})
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    meta = body["sovereign"]
    assert body["choices"][0]["message"]["content"].strip()  # still answered
    assert meta["degraded"] is True and meta["grounded"] is False
    assert any(w.startswith(f"{node} failed (EngineError: forced node failure)") for w in meta["warnings"])
    assert "forced node failure" in meta["nodes"][node]["error"]
    if node != "validator":  # a failed validator leaves the answer unvalidated; the rest take the simple path
        assert "simple" in meta["nodes"] and meta["validator"]["status"] == "skipped"
    assert body["usage"]["completion_tokens"] > 0


async def test_timed_out_node_streams_a_200_with_the_warning(gateway: Client) -> None:
    client = await gateway({"retrieval": failing_node("timeout", delay_s=1.0)})
    async with client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert not any("error" in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    final = [c["sovereign"] for c in chunks if "sovereign" in c]
    assert text.strip() and len(final) == 1
    assert final[0]["degraded"] is True
    assert any(w.startswith("retrieval failed (timed out after 0.05 s)") for w in final[0]["warnings"])
