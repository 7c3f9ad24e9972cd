"""The nodes as plain async functions, with fakes (no LangGraph, no model)."""

from __future__ import annotations

import pytest

from sovereign.agents.nodes import planner, retrieval, router, validator
from sovereign.agents.state import RouteDecision, check_conversation_id, check_question
from sovereign.errors import EngineUnavailableError, InvalidRequestError
from sovereign.rag.models import SearchHit
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder, FakeRetriever

pytestmark = pytest.mark.anyio

DOCS = {
    "json.html": "The json module encodes Python objects as JSON text and decodes JSON text into objects.",
    "os.html": "The os module provides a portable way of using operating system dependent functionality.",
    "csv.html": "The csv module reads and writes tabular data in comma separated values format.",
}


@pytest.mark.parametrize(("question", "expected"), [
    ("hello there", "direct"),
    ("What is 2 + 2?", "direct"),
    ("write a poem about autumn", "direct"),
    ("How do I parse JSON in Python?", "retrieve"),
    ("what does os.path.join return", "retrieve"),
    ("explain `functools.partial`", "retrieve"),
])
def test_router_rules(question: str, expected: str) -> None:
    decision = router.rule_route(question)
    assert decision is not None and decision.route == expected


async def test_router_asks_model_only_when_unsure_and_validates() -> None:
    model = FakeChatModel('{"route": "direct", "reason": "chit-chat"}')
    record, usage = await router.route("Good stuff, keep going", model)
    assert record == {"route": "direct", "reason": "chit-chat", "by": "model"}
    assert model.calls[0].sampling.json_mode
    prompt = await model.count_prompt_tokens(model.calls[0])
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, 4)  # the fake streams 4 words
    confident = FakeChatModel('{"route": "direct"}')
    _, none = await router.route("How do I parse JSON in Python?", confident)
    assert confident.calls == [] and none.total_tokens == 0  # rules decided, no model call


@pytest.mark.parametrize("garbage", ["", "sure!", '{"route": "maybe"}', '{"reason": 1}', "{not json}"])
async def test_router_garbage_defaults_to_retrieve(garbage: str) -> None:
    record, _ = await router.route("Good stuff, keep going", FakeChatModel(garbage))
    assert record["route"] == "retrieve" and record["by"] == "default"
    assert router.parse_route(garbage) is None


def test_route_decision_schema() -> None:
    assert RouteDecision.model_validate_json('{"route": "retrieve", "extra": 1}').route == "retrieve"


def test_planner_splits_and_caps() -> None:
    q = "What does the os module provide and how does json work? Also what is csv?"
    plan = planner.plan(q, [], max_subqueries=3)
    assert plan[0] == q and len(plan) == 3
    assert planner.plan(q, [], max_subqueries=1) == [q]
    pair = planner.plan("What is the difference between copy.copy and copy.deepcopy?", [], 3)
    assert pair[1:] == ["copy.copy", "copy.deepcopy"]
    assert planner.plan("How do I parse JSON?", [], 3) == ["How do I parse JSON?"]


def test_planner_follow_up_uses_previous_question() -> None:
    history = [{"role": "user", "content": "How do I parse JSON?"}, {"role": "assistant", "content": "json.loads"}]
    assert planner.plan("and what does it return?", history, 3)[0] == "How do I parse JSON? and what does it return?"
    assert planner.plan("How do I copy a file with shutil?", history, 3)[0] == "How do I copy a file with shutil?"


def _hit(cid: str, text: str = "x y z") -> SearchHit:
    return SearchHit(chunk_id=cid, doc_id=cid, path=cid, title=cid, text=text, score=1.0)


def test_fuse_dedupes_and_keeps_whole_question_first() -> None:
    fused = retrieval.fuse([[_hit("a"), _hit("b")], [_hit("c"), _hit("b")], [_hit("b")]])
    assert [h.chunk_id for h in fused] == ["b", "a", "c"]


def test_pack_respects_budget_and_numbers_sources() -> None:
    hits = [_hit("a", "w " * 50), _hit("b", "w " * 80), _hit("c", "w " * 10)]
    sources = retrieval.pack(hits, 70, lambda t: len(t.split()))
    assert [(s["chunk_id"], s["n"]) for s in sources] == [("a", 1), ("c", 2)]


async def test_retrieve_runs_subqueries_and_survives_partial_failure() -> None:
    store = FakeRetriever(DOCS)
    sources, warnings = await retrieval.retrieve(
        ["json module", "csv module"], store, top_k=2, budget_tokens=500, count_tokens=lambda t: len(t.split()))
    assert store.queries == ["json module", "csv module"] and warnings == []
    assert {s["path"] for s in sources} >= {"json.html", "csv.html"}

    class Flaky(FakeRetriever):
        async def search(self, query, **kw):  # type: ignore[no-untyped-def]
            if "csv" in query:
                raise RuntimeError("boom")
            return await super().search(query, **kw)

    sources, warnings = await retrieval.retrieve(["json module", "csv module"], Flaky(DOCS), top_k=2,
                                                 budget_tokens=500, count_tokens=len)
    assert sources and len(warnings) == 1
    with pytest.raises(EngineUnavailableError):
        await retrieval.retrieve(["x"], None, top_k=2, budget_tokens=10, count_tokens=len)


async def test_rerank_orders_by_similarity() -> None:
    hits = [_hit("a", "operating system functionality"), _hit("b", "encodes JSON text")]
    reranked, tokens = await retrieval.rerank("JSON text", hits, FakeEmbedder())
    assert reranked[0].chunk_id == "b"
    assert tokens == 2 + 3 + 3  # FakeEmbedder counts words of the query and both chunks
    assert await retrieval.rerank("JSON text", hits[:1], FakeEmbedder()) == (hits[:1], 0)


async def test_validator_citations_and_support() -> None:
    sources = [{"n": 1, "text": DOCS["json.html"]}, {"n": 2, "text": DOCS["os.html"]}]
    good = "The json module encodes Python objects as JSON text [1]."
    verdict, tokens = await validator.validate(good, sources, FakeEmbedder(), 0.45)
    assert verdict["status"] == "passed" and verdict["checked"] == 1
    embedder = FakeEmbedder()
    assert tokens == sum(embedder.count_tokens(t) for t in [good.replace(" [1]", ""), *DOCS.values()][:3])
    bad = "The json module encodes Python objects as JSON text [7]. Bananas grow on tall green trees [2]."
    verdict, _ = await validator.validate(bad, sources, FakeEmbedder(), 0.45)
    assert verdict["status"] == "failed" and verdict["invalid_citations"] == [7]
    assert [s["supported"] for s in verdict["sentences"]] == [True, False]
    feedback = validator.feedback_for(verdict, 2)
    assert "[7]" in feedback and "Bananas" in feedback and feedback.startswith("Important:")
    empty, _ = await validator.validate("", sources, FakeEmbedder(), 0.45)
    assert empty["status"] == "failed"


def test_split_sentences_keeps_trailing_citation() -> None:
    assert validator.split_sentences("One two three four. [1] Five six seven eight.") == [
        "One two three four.[1]", "Five six seven eight."]
    assert validator.citations("a [1, 2] b [2][3]") == [1, 2, 3]


@pytest.mark.parametrize("bad", ["", "   ", "\n"])
def test_empty_question_rejected(bad: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_question(bad)


@pytest.mark.parametrize("bad", ["", "-leading", "has space", "x" * 129, "semi;colon", "../etc"])
def test_bad_conversation_id_rejected(bad: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_conversation_id(bad)
    assert info.value.param == "conversation_id"
    assert check_conversation_id("user-1:chat_2.a") == "user-1:chat_2.a"
