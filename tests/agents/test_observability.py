"""Spans and metrics of one agent run: a span per node and per model / store / embedding call, with
attributes that match the response's own records, and a latency sample per node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from sovereign.agents.backend import AgentBackend
from sovereign.agents.state import NODE_NAMES, AgentDeps
from sovereign.backends.base import collect
from sovereign.config import AgentSettings
from sovereign.observability import tracing
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever, failing_node
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio

DOCS = {
    "json.html": "The json module encodes Python objects as JSON text and decodes JSON text into objects.",
    "os.html": "The os module provides a portable way of using operating system dependent functionality.",
    "pickle.html": "The pickle module serializes Python objects as bytes rather than as JSON text.",
}
ANSWER = "The json module encodes Python objects as JSON text [1]."
UNSURE = "Tell me about encoding objects as JSON text"  # no routing rule fires: the model is asked


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Every span :func:`sovereign.observability.tracing.span` opens, kept in memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield memory
    provider.shutdown()


def _reply(request: GenerationRequest) -> str:
    return '{"route": "retrieve", "reason": "docs"}' if request.sampling.json_mode else ANSWER


async def _run(tmp_path: Path, question: str, nodes: Any = None) -> dict[str, Any]:
    deps = AgentDeps(model=FakeChatModel(_reply), retriever=lambda: FakeRetriever(DOCS), embedder=FakeEmbedder(),
                     settings=AgentSettings(checkpointer="memory", rerank=True, node_timeout_s=5))
    backend = AgentBackend(deps, tmp_path, nodes=nodes)
    await backend.start()
    try:
        request = GenerationRequest(model="sovereign-agent", sampling=SamplingParams(max_tokens=32),
                                    messages=(ChatMessage("user", question),))
        return (await collect(backend.stream(request))).metadata
    finally:
        await backend.close()


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for item in spans:
        out.setdefault(item.name, []).append(item)
    return out


def _parent(child: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> str | None:
    assert child.parent is not None, f"{child.name} has no parent"
    return next(s.name for s in spans if s.context.span_id == child.parent.span_id)


async def test_spans_per_node_and_per_call_with_attributes(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    meta = await _run(tmp_path, UNSURE)
    assert meta["grounded"] and len(meta["sources"]) == 2  # one synthesizer round, two chunks to rerank
    spans = exporter.get_finished_spans()
    named = _by_name(spans)
    (run,) = named["agent.run"]
    assert run.attributes is not None and run.attributes["agent.model"] == "sovereign-agent"
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}  # one trace per run

    for node in NODE_NAMES:
        (node_span,) = named[f"agent.node.{node}"]
        attrs = dict(node_span.attributes or {})
        assert attrs["agent.node"] == node and _parent(node_span, spans) == "agent.run"
        record = meta["nodes"][node]
        for key in ("prompt_tokens", "completion_tokens", "embedding_tokens"):
            assert attrs[f"agent.{key}"] == record[key], (node, key)
        assert node_span.end_time is not None and node_span.start_time is not None
        assert node_span.end_time > node_span.start_time and "agent.degraded" not in attrs

    calls = {s.attributes["agent.purpose"]: s for s in named["agent.model.call"]}  # type: ignore[index]
    assert set(calls) == {"route", "synthesize"}
    assert _parent(calls["route"], spans) == "agent.node.router"
    assert _parent(calls["synthesize"], spans) == "agent.node.synthesizer"
    for purpose, node in (("route", "router"), ("synthesize", "synthesizer")):
        attrs = dict(calls[purpose].attributes or {})
        assert attrs["gen_ai.request.model"] == "fake-model"
        assert attrs["gen_ai.usage.input_tokens"] == meta["nodes"][node]["prompt_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] == meta["nodes"][node]["completion_tokens"] > 0

    (search,) = named["agent.retriever.search"]  # one sub-query: the question is not compound
    assert _parent(search, spans) == "agent.node.retrieval"
    assert dict(search.attributes or {}) == {"agent.subquery": 0, "agent.top_k": 5, "agent.hits": 2}

    embeds = {s.attributes["agent.purpose"]: s for s in named["agent.embed"]}  # type: ignore[index]
    assert set(embeds) == {"rerank", "validate"}
    assert _parent(embeds["rerank"], spans) == "agent.node.retrieval"
    assert _parent(embeds["validate"], spans) == "agent.node.validator"
    assert embeds["validate"].attributes["agent.embedding_tokens"] == meta["nodes"]["validator"]["embedding_tokens"]  # type: ignore[index]
    assert embeds["rerank"].attributes["agent.texts"] == 3  # type: ignore[index]  # question + two chunks


async def test_failed_node_span_is_marked_degraded(tmp_path: Path, exporter: InMemorySpanExporter) -> None:
    meta = await _run(tmp_path, UNSURE, nodes={"retrieval": failing_node("error")})
    named = _by_name(exporter.get_finished_spans())
    (failed,) = named["agent.node.retrieval"]
    assert meta["degraded"] and (failed.attributes or {})["agent.degraded"] is True
    assert [e.name for e in failed.events] == ["exception"]
    assert "agent.node.simple" in named and "agent.node.validator" not in named


def _duration_count(node: str) -> float:
    return REGISTRY.get_sample_value("sovereign_agent_node_duration_seconds_count", {"node": node}) or 0.0


async def test_node_duration_histogram_gets_one_sample_per_node(tmp_path: Path) -> None:
    before = {node: _duration_count(node) for node in (*NODE_NAMES, "simple")}
    total_before = REGISTRY.get_sample_value("sovereign_agent_node_duration_seconds_sum", {"node": "synthesizer"}) or 0
    meta = await _run(tmp_path, UNSURE)
    assert set(meta["nodes"]) == set(NODE_NAMES)
    for node in NODE_NAMES:
        assert _duration_count(node) == before[node] + 1, node
    assert _duration_count("simple") == before["simple"]  # not degraded: the simple path did not run
    total = REGISTRY.get_sample_value("sovereign_agent_node_duration_seconds_sum", {"node": "synthesizer"}) or 0
    assert 0 < total - total_before < 5  # seconds, not milliseconds
