"""The gateway plugin: registers ``sovereign-agent``, resolves the retriever and model per request."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sovereign.backends.base import collect
from sovereign.backends.registry import ModelRegistry
from sovereign.config import load_settings
from sovereign.server.plugins import agents as plugin
from sovereign.server.state import AppState
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio


async def test_install_registers_agent_with_lazy_retriever_and_model() -> None:
    settings = load_settings(agents={"checkpointer": "memory"})
    registry = ModelRegistry()
    first = FakeChatModel(name=settings.engine.model_name)
    registry.add_chat(first)
    embedder = FakeEmbedder()
    embedder.name = settings.embeddings.model_name  # type: ignore[misc]
    registry.add_embedding(embedder)
    state = AppState(settings, registry)
    assert await plugin.install(state) is None
    agent = registry.chat("sovereign-agent")
    await agent.start()
    request = GenerationRequest(model="sovereign-agent", sampling=SamplingParams(max_tokens=16),
                                messages=(ChatMessage("user", "What does the json module do?"),))
    try:
        degraded = await collect(agent.stream(request))  # no rag service yet
        assert degraded.metadata["degraded"] and degraded.metadata["sources"] == []
        state.services["rag"] = SimpleNamespace(retriever=FakeRetriever({"json.html": "The json module encodes JSON."}))
        swapped = FakeChatModel(name=settings.engine.model_name)
        registry.replace_chat(settings.engine.model_name, swapped)  # e.g. the routing plugin's router
        result = await collect(agent.stream(request))
        assert result.metadata["sources"][0]["path"] == "json.html" and not result.metadata["degraded"]
        assert swapped.calls and len(first.calls) == 1
    finally:
        await agent.close()


async def test_install_without_chat_model_registers_nothing() -> None:
    state = AppState(load_settings(), ModelRegistry())
    assert await plugin.install(state) is None
    assert "sovereign-agent" not in state.registry.chat_backends
