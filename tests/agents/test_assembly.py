"""The agent pipeline's assembly: ``sovereign-agent`` over the registry's model, resolved per request."""

from __future__ import annotations

from typing import Any, cast

import pytest

from sovereign.agents.assembly import agent_pipeline
from sovereign.backends.registry import ModelRegistry
from sovereign.config import load_settings
from sovereign.server.startup import start_pipelines
from sovereign.server.state import AppState
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio
REQUEST = GenerationRequest(model="sovereign-agent", sampling=SamplingParams(max_tokens=16),
                            messages=(ChatMessage("user", "What does the json module do?"),))


class FakeRag:
    """The two parts of a RagService the agent uses: its retriever and its embedder."""

    def __init__(self) -> None:
        self.retriever = FakeRetriever({"json.html": "The json module encodes JSON."})
        self.embedder = FakeEmbedder()


def registry_with(model: FakeChatModel, settings: Any) -> ModelRegistry:
    registry = ModelRegistry()
    registry.add_chat(model)
    embedder = FakeEmbedder()
    embedder.name = settings.embeddings.model_name  # type: ignore[misc]
    registry.add_embedding(embedder)
    return registry


async def test_pipelines_stage_registers_agent_that_resolves_model_per_request() -> None:
    settings = load_settings(agents={"checkpointer": "memory"})
    first = FakeChatModel(name=settings.engine.model_name)
    registry = registry_with(first, settings)
    state = AppState(settings, registry, rag=cast(Any, FakeRag()))
    assert await start_pipelines(state) is None
    agent = registry.chat("sovereign-agent")
    await agent.start()
    try:
        from sovereign.backends.base import collect

        swapped = FakeChatModel(name=settings.engine.model_name)
        registry.replace_chat(settings.engine.model_name, swapped)  # e.g. the routing table's router
        result = await collect(agent.stream(REQUEST))
        assert result.metadata["sources"][0]["path"] == "json.html" and not result.metadata["degraded"]
        assert swapped.calls and not first.calls
    finally:
        await agent.close()


async def test_without_document_memory_answers_degrade() -> None:
    settings = load_settings(agents={"checkpointer": "memory"})
    registry = registry_with(FakeChatModel(name=settings.engine.model_name), settings)
    agent = agent_pipeline(settings, registry, None)
    assert agent is not None
    await agent.start()
    try:
        from sovereign.backends.base import collect

        degraded = await collect(agent.stream(REQUEST))
        assert degraded.metadata["degraded"] and degraded.metadata["sources"] == []
        with pytest.raises(LookupError):  # no documents: the cache must not scope (nor cache) by guess
            await agent.source_scope(None)
    finally:
        await agent.close()


async def test_without_chat_model_registers_nothing() -> None:
    state = AppState(load_settings(), ModelRegistry())
    assert await start_pipelines(state) is None
    assert "sovereign-agent" not in state.registry.chat_backends
    assert "sovereign-rag" not in state.registry.chat_backends
