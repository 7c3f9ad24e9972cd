"""Hybrid search and cited answers over the fixture corpus (real MiniLM, real SQLite, real SmolLM2)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from sovereign.backends.base import collect
from sovereign.config import load_settings
from sovereign.errors import InvalidRequestError, NotFoundError
from sovereign.rag.answer import RagChatBackend
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.rag.retrieve import rrf_fuse
from sovereign.rag.service import RagService
from sovereign.testing.agent_fakes import FakeChatModel
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams
from tests.rag.conftest import CORPUS

pytestmark = pytest.mark.anyio
QUESTION = "What does functools.lru_cache do with its maxsize argument?"


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory, embedder: OnnxMiniLMEmbedder) -> AsyncIterator[RagService]:
    """The whole fixture corpus ingested once into collection ``pydocs`` (about 100 chunks)."""
    settings = load_settings(data_dir=tmp_path_factory.mktemp("ret"))
    svc = await RagService.open(settings, embedder=embedder)
    report = await svc.ingest_paths([CORPUS], "pydocs")
    assert report.added == 5 and not report.failed
    yield svc
    await svc.close()


def test_rrf_matches_cormack_formula() -> None:
    fused = dict(rrf_fuse([[("a", 9.0), ("b", 8.0)], [("b", 0.9), ("c", 0.8)]], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)
    assert [cid for cid, _ in rrf_fuse([[("a", 1.0), ("b", 1.0)], [("b", 1.0), ("a", 1.0)]])] == ["a", "b"]


async def test_hybrid_search_finds_the_right_page(service: RagService) -> None:
    hits = await service.retriever.search(QUESTION, top_k=5, collection="pydocs")
    assert hits[0].path.endswith("library/functools.html")
    assert any("maxsize" in h.text for h in hits[:3])
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all("bm25_rank" in h.metadata or "vector_rank" in h.metadata for h in hits)
    heap = await service.retriever.search("push an item onto the heap priority queue", top_k=3)
    assert heap[0].path.endswith("library/heapq.html")


async def test_filters_restrict_results(service: RagService) -> None:
    hits = await service.retriever.search("sorting with a key function", top_k=5, path_glob="*/howto/*")
    assert hits and all("/howto/" in h.path for h in hits)
    assert await service.retriever.index_version("pydocs") >= 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"query": "", "top_k": 3}, InvalidRequestError),  # bad input: empty query
        ({"query": "   \n", "top_k": 3}, InvalidRequestError),  # bad input: whitespace-only query
        ({"query": "heap", "top_k": 0}, InvalidRequestError),  # bad input: top_k <= 0
        ({"query": "heap", "top_k": -5}, InvalidRequestError),  # bad input: negative top_k
        ({"query": "heap", "top_k": 3, "collection": "nope"}, NotFoundError),  # bad input: unknown collection
        ({"query": "heap", "top_k": 3, "collection": "../etc"}, InvalidRequestError),  # bad input: bad name
    ],
)
async def test_bad_search_input(service: RagService, kwargs: dict[str, object], error: type[Exception]) -> None:
    query = kwargs.pop("query")
    with pytest.raises(error):
        await service.retriever.search(query, **kwargs)  # type: ignore[arg-type]


async def test_sovereign_rag_answers_with_citations_within_the_context_budget(
    service: RagService, llama: object
) -> None:
    rag = RagChatBackend(lambda: llama, service.retriever, collection="pydocs", top_k=6)  # type: ignore[arg-type,return-value]
    request = GenerationRequest(model="sovereign-rag", messages=(ChatMessage("user", QUESTION),),
                                sampling=SamplingParams(max_tokens=16, temperature=0.0, seed=1))
    prompt, used = await rag._build(request)
    window = llama.capabilities.context_window  # type: ignore[attr-defined]
    assert 1 <= len(used) < 6  # a 1024-token window cannot hold six 200-token chunks
    assert await llama.count_prompt_tokens(prompt) <= window - 16  # type: ignore[attr-defined]
    assert "[1]" in prompt.messages[0].content and "cite" in prompt.messages[0].content
    result = await collect(rag.stream(request))
    assert result.text.strip()
    sources = result.metadata["sources"]
    assert sources[0]["path"].endswith("library/functools.html")
    assert set(sources[0]) >= {"path", "title", "chunk_id", "score"}
    assert result.metadata["collection"] == "pydocs"
    assert result.metadata["index_version"] == await service.retriever.index_version("pydocs")
    with pytest.raises(InvalidRequestError):  # bad input: no user message
        await collect(rag.stream(GenerationRequest(model="sovereign-rag", sampling=SamplingParams(),
                                                   messages=(ChatMessage("system", "hi"),))))


async def test_answer_citations_point_at_the_sources_they_are_numbered_after(service: RagService) -> None:
    """A model that cites the prompt's source block mentioning ``maxsize``: the ``[n]`` in its answer
    must name ``sources[n - 1]`` of the response, and block ``[n]`` of the prompt must be that source."""
    blocks: dict[int, str] = {}

    def cite_maxsize(request: GenerationRequest) -> str:
        system = request.messages[0].content
        found = re.split(r"^\[(\d+)\] ", system.split("Sources:\n", 1)[1], flags=re.M)[1:]
        blocks.update({int(n): body for n, body in zip(found[::2], found[1::2], strict=True)})
        cited = [n for n, body in blocks.items() if "maxsize" in body]
        return "The maxsize argument bounds the cache " + " ".join(f"[{n}]" for n in cited) + "."

    model = FakeChatModel(cite_maxsize)
    rag = RagChatBackend(lambda: model, service.retriever, collection="pydocs", top_k=4)
    result = await collect(rag.stream(GenerationRequest(
        model="sovereign-rag", messages=(ChatMessage("user", QUESTION),), sampling=SamplingParams(max_tokens=32))))
    sources = result.metadata["sources"]
    assert len(sources) == len(blocks) == 4
    for n, body in blocks.items():  # prompt block n is source n
        assert body.split("\n", 1)[0].endswith(f"({sources[n - 1]['path']})")
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", result.text)]
    assert cited and all(1 <= n <= len(sources) for n in cited)
    rows = await service.store.fetch_hits([sources[n - 1]["chunk_id"] for n in cited])
    assert all("maxsize" in rows[sources[n - 1]["chunk_id"]].text for n in cited)
    uncited = [s["chunk_id"] for i, s in enumerate(sources, 1) if i not in cited]
    assert all("maxsize" not in h.text for h in (await service.store.fetch_hits(uncited)).values())


async def test_rag_model_rejects_bad_top_k_and_unknown_collections(service: RagService) -> None:
    model = FakeChatModel()
    for bad in (0, -1, 101):  # bad input: top_k outside 1..100
        with pytest.raises(InvalidRequestError, match="top_k"):
            RagChatBackend(lambda: model, service.retriever, collection="pydocs", top_k=bad)
    with pytest.raises(InvalidRequestError):  # bad input: a collection name with a path in it
        RagChatBackend(lambda: model, service.retriever, collection="../x")
    request = GenerationRequest(model="sovereign-rag", messages=(ChatMessage("user", QUESTION),),
                                sampling=SamplingParams(max_tokens=8))
    strict = RagChatBackend(lambda: model, service.retriever, collection="typo", require_collection=True)
    with pytest.raises(NotFoundError, match="typo"):  # bad input: unknown collection, named by the user
        await collect(strict.stream(request))
    assert model.calls == []  # nothing was generated
    lenient = RagChatBackend(lambda: model, service.retriever, collection="typo")  # the server's chat model
    assert (await collect(lenient.stream(request))).metadata["sources"] == []
