"""The whole graph with fakes: routing, feedback round, forced failure of every node, memory, bad input."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sovereign.agents.backend import REVISION_SEPARATOR, AgentBackend
from sovereign.agents.graph import ThreadedSqliteSaver
from sovereign.agents.state import AgentDeps
from sovereign.backends.base import collect
from sovereign.config import AgentSettings
from sovereign.errors import EngineError, InvalidRequestError, UnsupportedParameterError
from sovereign.observability import metrics
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever, failing_node
from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest, SamplingParams, Usage

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
    # streamed token by token (citation attribution passes text through as it comes)
    assert all(c.finish_reason is None and c.text for c in chunks[:-1]) and len(chunks) > 3
    assert "".join(c.text for c in chunks).count("[1]") == 1  # the model's own marker, not doubled
    meta = chunks[-1].metadata
    assert meta is not None and chunks[-1].finish_reason == "stop"
    assert meta["grounded"] is True and meta["validator"]["status"] == "passed"
    assert meta["sources"][0]["path"] == "json.html" and "text" not in meta["sources"][0]
    assert set(meta["nodes"]) == {"router", "planner", "retrieval", "synthesizer", "validator"}
    assert all(n["ms"] >= 0 for n in meta["nodes"].values()) and meta["nodes"]["synthesizer"]["completion_tokens"] > 0
    assert meta["conversation_id"] == "conv-1" and meta["warnings"] == [] and meta["degraded"] is False
    assert chunks[-1].usage.completion_tokens == meta["nodes"]["synthesizer"]["completion_tokens"]


async def test_usage_splits_prompt_completion_and_embedding_tokens(make: Any) -> None:
    """The router's and synthesizer's calls add up to ``usage``; the validator's embedding tokens
    are reported on their own and never counted as chat tokens."""
    answer = "The json module encodes Python objects as JSON text [1]."
    model = FakeChatModel(lambda r: '{"route": "retrieve", "reason": "docs"}' if r.sampling.json_mode else answer)
    embedder = FakeEmbedder()
    backend = await make(model=model, embedder=embedder)
    result = await collect(backend.stream(request("Tell me about encoding objects as JSON text")))
    meta, nodes = result.metadata, result.metadata["nodes"]
    assert meta["route"]["by"] == "model" and meta["grounded"] is True  # no rule fired: the model routed
    route_call, answer_call = model.calls
    prompts = [await model.count_prompt_tokens(c) for c in (route_call, answer_call)]
    assert prompts[0] > 0 and prompts[1] > prompts[0]  # the answer prompt carries the sources
    assert (nodes["router"]["prompt_tokens"], nodes["router"]["completion_tokens"]) == (prompts[0], 4)
    assert (nodes["synthesizer"]["prompt_tokens"], nodes["synthesizer"]["completion_tokens"]) == (prompts[1], 10)
    assert result.usage.prompt_tokens == prompts[0] + prompts[1]
    assert result.usage.completion_tokens == 4 + 10  # not inflated by the routing prompt
    cited = [DOCS[s["path"]] for s in meta["sources"]]
    embedded = sum(embedder.count_tokens(t) for t in [answer.replace(" [1]", ""), *cited])
    assert nodes["validator"]["embedding_tokens"] == embedded > 0
    assert all(nodes[n]["prompt_tokens"] == nodes[n]["completion_tokens"] == 0 for n in ("planner", "validator"))
    assert all(n["embedding_tokens"] == 0 for name, n in nodes.items() if name != "validator")
    assert meta["usage"] == {**result.usage.to_dict(), "embedding_tokens": embedded}


async def test_rerank_embedding_tokens_are_counted_in_retrieval(make: Any) -> None:
    embedder = FakeEmbedder()
    backend = await make(embedder=embedder, rerank=True)
    result = await collect(backend.stream(request()))
    nodes = result.metadata["nodes"]
    texts = [QUESTION, *(DOCS[s["path"]] for s in result.metadata["sources"])]
    assert len(texts) == 3 and nodes["retrieval"]["embedding_tokens"] == sum(map(embedder.count_tokens, texts))
    assert result.metadata["usage"]["embedding_tokens"] == (
        nodes["retrieval"]["embedding_tokens"] + nodes["validator"]["embedding_tokens"])


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


FIRST, FOLLOW_UP = "How do I parse JSON in Python?", "and what does it return?"


async def two_turns(backend: AgentBackend, model: FakeChatModel, conversation_id: str) -> None:
    """Ask FIRST then FOLLOW_UP in one conversation; the follow-up's answer prompt (the recording
    model's last call) must carry the first turn, question and answer, between system and question."""
    first = await collect(backend.stream(request(FIRST, conversation_id=conversation_id)))
    assert first.text and not first.metadata["degraded"]
    await collect(backend.stream(request(FOLLOW_UP, conversation_id=conversation_id)))
    prompt = model.calls[-1].messages
    assert prompt[0].role == "system" and "Sources:" in prompt[0].content  # the synthesizer's call
    assert [(m.role, m.content) for m in prompt[1:]] == [
        ("user", FIRST), ("assistant", first.text), ("user", FOLLOW_UP)]
    assert await backend.graph.turns(conversation_id) == [
        {"role": "user", "content": FIRST}, {"role": "assistant", "content": first.text},
        {"role": "user", "content": FOLLOW_UP}, {"role": "assistant", "content": model.reply_for(model.calls[-1])}]


async def test_conversation_memory_in_sqlite_checkpointer(make: Any, tmp_path: Path) -> None:
    model = FakeChatModel()
    backend = await make(model=model, checkpointer="sqlite")
    await two_turns(backend, model, "c-42")
    assert await backend.graph.turns("other") == []
    assert (tmp_path / "agents.sqlite").is_file()
    await backend.close()
    reopened = await make(model=model, checkpointer="sqlite")  # survives a restart
    assert len(await reopened.graph.turns("c-42")) == 4


async def test_stored_checkpoint_keeps_the_conversation_not_the_run(make: Any, tmp_path: Path) -> None:
    backend = await make(checkpointer="sqlite")
    result = await collect(backend.stream(request(conversation_id="slim-1")))
    assert result.metadata["sources"] and result.metadata["validator"]["status"] == "passed"
    (blob,) = sqlite3.connect(tmp_path / "agents.sqlite").execute(
        "SELECT checkpoint FROM checkpoints WHERE thread_id = 'slim-1'").fetchone()
    assert b"portable way" not in blob and b"passed" not in blob  # no sources, no verdict stored
    snapshot = await backend.graph._graph.aget_state({"configurable": {"thread_id": "slim-1"}})
    assert snapshot.values["sources"] == [] and snapshot.values["nodes"] == {}
    assert snapshot.values["turns"] == [{"role": "user", "content": QUESTION},
                                        {"role": "assistant", "content": result.text}]


async def test_sqlite_checkpointer_lists_and_deletes_on_its_own_thread(make: Any) -> None:
    backend = await make(checkpointer="sqlite")
    for question in (FIRST, FOLLOW_UP):
        await collect(backend.stream(request(question, conversation_id="del-1")))
    saver = backend.graph._graph.checkpointer
    assert isinstance(saver, ThreadedSqliteSaver)
    assert len([t async for t in saver.alist({"configurable": {"thread_id": "del-1"}})]) == 2  # one per run
    assert (await saver._call(lambda: threading.current_thread().name)).startswith("agents-checkpoints")
    await saver.adelete_thread("del-1")
    assert await backend.graph.turns("del-1") == []


async def test_events_arrive_per_node_in_order(make: Any) -> None:
    backend = await make()
    kinds: list[str] = []
    async for item in backend.events(QUESTION, [], "order-1", request()):
        if not isinstance(item, dict) or item["type"] not in ("node_start", "node_end", "token", "final"):
            continue
        kind = f"{item['type']}:{item['node']}" if "node" in item else item["type"]
        if not kinds or kinds[-1] != kind:  # consecutive tokens count once
            kinds.append(kind)
    before = [f"{kind}:{node}" for node in ("router", "planner", "retrieval") for kind in ("node_start", "node_end")]
    assert kinds == [*before, "node_start:synthesizer", "token", "node_end:synthesizer",
                     "node_start:validator", "node_end:validator", "final"]


async def test_closing_the_stream_cancels_the_running_graph(make: Any) -> None:
    cancelled = asyncio.Event()

    class Stalling(FakeChatModel):
        async def stream(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
            yield GenerationChunk(text="The", usage=Usage(1, 1))
            try:
                await asyncio.sleep(30)
            finally:
                cancelled.set()

    backend = await make(model=Stalling())
    stream = backend.stream(request())
    assert (await anext(stream)).text == "The"
    await stream.aclose()  # the client went away
    await asyncio.wait_for(cancelled.wait(), 1)


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
    model = FakeChatModel()
    backend = await make(model=model, checkpointer="postgres", pg_dsn_env="AGENT_TEST_PG")
    await two_turns(backend, model, "pg-1")
    await collect(backend.stream(request(FOLLOW_UP, conversation_id="pg-other")))
    assert [m.role for m in model.calls[-1].messages] == ["system", "user"]  # another conversation: no history
    await backend.close()
    reopened = await make(model=model, checkpointer="postgres", pg_dsn_env="AGENT_TEST_PG")
    assert len(await reopened.graph.turns("pg-1")) == 4  # persisted in the database, not the process


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
