"""The whole graph with fakes: routing, feedback round, forced failure of every node, memory, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sovereign.agents.backend import REVISION_SEPARATOR, AgentBackend
from sovereign.agents.state import AgentDeps
from sovereign.backends.base import collect
from sovereign.config import AgentSettings
from sovereign.errors import EngineError, InvalidRequestError, UnsupportedParameterError
from sovereign.observability import metrics
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever, failing_node
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio

DOCS = {
    "json.html": "The json module encodes Python objects as JSON text and decodes JSON text into objects.",
    "os.html": "The os module provides a portable way of using operating system dependent functionality.",
}
QUESTION = "What does the json module do?"


def request(question: str = QUESTION, conversation_id: str | None = None, **sampling: Any) -> GenerationRequest:
    return GenerationRequest(model="sovereign-agent", sampling=SamplingParams(max_tokens=64, **sampling),
                             messages=(ChatMessage("user", question),), conversation_id=conversation_id)


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Any]:
    opened: list[AgentBackend] = []

    async def build(model: Any = None, retriever: Any = "default", embedder: Any = None,
                    nodes: Any = None, **settings: Any) -> AgentBackend:
        store = FakeRetriever(DOCS) if retriever == "default" else retriever
        deps = AgentDeps(model=model or FakeChatModel(), retriever=lambda: store,
                         embedder=embedder or FakeEmbedder(),
                         settings=AgentSettings(**{"checkpointer": "memory", **settings}))
        backend = AgentBackend(deps, tmp_path, nodes=nodes)
        await backend.start()
        opened.append(backend)
        return backend

    yield build
    for backend in opened:
        await backend.close()


async def test_grounded_answer_with_sources_timings_and_metadata(make: Any) -> None:
    backend = await make()
    chunks = [c async for c in backend.stream(request(conversation_id="conv-1"))]
    assert all(c.finish_reason is None for c in chunks[:-1]) and len(chunks) > 3  # streamed word by word
    meta = chunks[-1].metadata
    assert meta is not None and chunks[-1].finish_reason == "stop"
    assert meta["grounded"] is True and meta["validator"]["status"] == "passed"
    assert meta["sources"][0]["path"] == "json.html" and "text" not in meta["sources"][0]
    assert set(meta["nodes"]) == {"router", "planner", "retrieval", "synthesizer", "validator"}
    assert all(n["ms"] >= 0 for n in meta["nodes"].values()) and meta["nodes"]["synthesizer"]["tokens"] > 0
    assert meta["conversation_id"] == "conv-1" and meta["warnings"] == [] and meta["degraded"] is False
    assert chunks[-1].usage.completion_tokens == meta["nodes"]["synthesizer"]["tokens"]


async def test_direct_route_skips_retrieval_and_validation(make: Any) -> None:
    store = FakeRetriever(DOCS)
    backend = await make(model=FakeChatModel("Hello!"), retriever=store)
    result = await collect(backend.stream(request("hello")))
    assert result.text == "Hello!" and store.queries == []
    assert result.metadata["route"]["route"] == "direct" and result.metadata["grounded"] is False
    assert set(result.metadata["nodes"]) == {"router", "synthesizer"}


async def test_unsupported_answer_gets_one_feedback_round_then_grounded_false(make: Any) -> None:
    model = FakeChatModel("Bananas grow on tall green trees in the tropics [1].")
    backend = await make(model=model)
    result = await collect(backend.stream(request()))
    assert len(model.calls) == 2  # the answer, then one revision: no loop
    assert "Important:" in model.calls[1].messages[0].content  # the feedback reached the synthesizer
    assert REVISION_SEPARATOR in result.text
    assert result.metadata["grounded"] is False and result.metadata["validator"]["rounds"] == 2


async def test_revision_that_passes_is_grounded(make: Any) -> None:
    replies = iter(["Bananas grow on tall green trees in the tropics [1].",
                    "The json module encodes Python objects as JSON text [1]."])
    backend = await make(model=FakeChatModel(lambda _r: next(replies)))
    result = await collect(backend.stream(request()))
    assert result.metadata["grounded"] is True and result.metadata["validator"]["rounds"] == 2


@pytest.mark.parametrize("node", ["router", "planner", "retrieval", "synthesizer", "validator"])
@pytest.mark.parametrize("kind", ["error", "timeout"])
async def test_each_node_failing_degrades_to_simple_path(make: Any, node: str, kind: str) -> None:
    before = metrics.AGENT_DEGRADED.labels(node=node)._value.get()
    backend = await make(nodes={node: failing_node(kind, delay_s=1.0)}, node_timeout_s=0.05)
    result = await collect(backend.stream(request()))
    meta = result.metadata
    assert result.text.strip(), "an answer is still given"
    assert meta["degraded"] is True and any(node in w for w in meta["warnings"])
    assert meta["nodes"][node].get("error")
    assert meta["grounded"] is False
    assert metrics.AGENT_DEGRADED.labels(node=node)._value.get() == before + 1
    if node != "validator":
        assert "simple" in meta["nodes"] and meta["validator"]["status"] == "skipped"
        assert "json" in result.text.lower()  # the simple path still retrieved and answered from sources


async def test_no_retriever_degrades_with_warning(make: Any) -> None:
    backend = await make(retriever=None)
    result = await collect(backend.stream(request()))
    assert result.metadata["degraded"] and result.metadata["sources"] == []
    assert any("without sources" in w for w in result.metadata["warnings"])


async def test_broken_embedder_fails_validator_only(make: Any) -> None:
    backend = await make(embedder=FakeEmbedder(fail=True))
    result = await collect(backend.stream(request()))
    assert result.metadata["nodes"]["validator"]["error"] and result.metadata["sources"]


async def test_model_down_everywhere_raises_engine_error_not_500(make: Any) -> None:
    backend = await make(model=FakeChatModel(fail=True))
    with pytest.raises(EngineError):
        await collect(backend.stream(request()))


async def test_conversation_memory_in_sqlite_checkpointer(make: Any, tmp_path: Path) -> None:
    model = FakeChatModel()
    backend = await make(model=model, checkpointer="sqlite")
    await collect(backend.stream(request("How do I parse JSON in Python?", conversation_id="c-42")))
    await collect(backend.stream(request("and what does it return?", conversation_id="c-42")))
    follow_up = model.calls[-1].messages
    assert follow_up[1].content == "How do I parse JSON in Python?"  # earlier turn in prompt
    assert await backend.graph.turns("c-42") and len(await backend.graph.turns("c-42")) == 4
    assert await backend.graph.turns("other") == []
    assert (tmp_path / "agents.sqlite").is_file()
    await backend.close()
    reopened = await make(model=model, checkpointer="sqlite")  # survives a restart
    assert len(await reopened.graph.turns("c-42")) == 4


@pytest.mark.parametrize(("req", "error"), [
    (request("   "), InvalidRequestError),
    (request(conversation_id="bad id!"), InvalidRequestError),
    (GenerationRequest(model="sovereign-agent", sampling=SamplingParams(), prompt="hi"), UnsupportedParameterError),
    (GenerationRequest(model="sovereign-agent", sampling=SamplingParams(),
                       messages=(ChatMessage("system", "x"),)), InvalidRequestError),
    (request(json_mode=True), UnsupportedParameterError),
])
async def test_bad_input_is_a_400(make: Any, req: GenerationRequest, error: type[Exception]) -> None:
    backend = await make()
    with pytest.raises(error):
        await collect(backend.stream(req))


@pytest.mark.integration
async def test_conversation_memory_in_postgres_checkpointer(make: Any, pg_uri: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_TEST_PG", pg_uri)
    backend = await make(checkpointer="postgres", pg_dsn_env="AGENT_TEST_PG")
    await collect(backend.stream(request("How do I parse JSON in Python?", conversation_id="pg-1")))
    await collect(backend.stream(request("and what does it return?", conversation_id="pg-1")))
    assert len(await backend.graph.turns("pg-1")) == 4


async def test_postgres_without_dsn_is_a_config_error(make: Any) -> None:
    from sovereign.errors import ConfigError

    with pytest.raises(ConfigError):
        await make(checkpointer="postgres")


async def test_unwritable_checkpointer_falls_back_to_memory_with_warning(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    deps = AgentDeps(model=FakeChatModel(), retriever=lambda: FakeRetriever(DOCS), embedder=FakeEmbedder(),
                     settings=AgentSettings())
    backend = AgentBackend(deps, blocked / "data")
    await backend.start()
    try:
        result = await collect(backend.stream(request(conversation_id="mem-1")))
    finally:
        await backend.close()
    assert result.metadata["grounded"] and any("not persisted" in w for w in result.metadata["warnings"])
