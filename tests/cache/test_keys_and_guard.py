"""Scope keys separate everything that changes an answer; the contrast guard rejects near-misses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sovereign.cache.keys import cache_key, normalize_query, reproducible, request_mode
from sovereign.cache.semantic import contrast
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams


def chat(question: str, system: str | None = None, **sampling: object) -> GenerationRequest:
    messages = ((ChatMessage("system", system),) if system else ()) + (ChatMessage("user", question),)
    return GenerationRequest(model="m", sampling=SamplingParams(temperature=0, **sampling), messages=messages)  # type: ignore[arg-type]


def test_normalization_makes_whitespace_irrelevant() -> None:
    a = cache_key(chat("How do I  copy a file?\n"), tenant="t", chat=True)
    b = cache_key(chat(" How do I copy a file?"), tenant="t", chat=True)
    assert a == b and normalize_query("a\u00a0 b ") == "a b"


@pytest.mark.parametrize(
    "change",
    [
        {"system": "Answer in French."},
        {"max_tokens": 10},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"seed": 1},
        {"stop": ("\n",)},
        {"json_mode": True},
        {"ignore_eos": True},
        {"presence_penalty": 1.0},
        {"frequency_penalty": 1.0},
    ],
)
def test_every_output_changing_field_changes_the_scope(change: dict) -> None:
    base = cache_key(chat("q"), tenant="t", chat=True)
    system = change.pop("system", None)
    request = chat("q", system)
    if change:
        request = replace(request, sampling=replace(request.sampling, **change))
    other = cache_key(request, tenant="t", chat=True)
    assert base is not None and other is not None and base.scope != other.scope and base.exact != other.exact


def test_tenant_model_kind_and_index_version_change_the_scope() -> None:
    base = cache_key(chat("q"), tenant="t", chat=True)
    assert base is not None
    assert cache_key(chat("q"), tenant="u", chat=True).scope != base.scope  # type: ignore[union-attr]
    assert cache_key(replace(chat("q"), model="n"), tenant="t", chat=True).scope != base.scope  # type: ignore[union-attr]
    v1 = cache_key(chat("q"), tenant="t", chat=True, collection="c", index_version=1)
    v2 = cache_key(chat("q"), tenant="t", chat=True, collection="c", index_version=2)
    assert v1 and v2 and v1.scope != v2.scope != base.scope
    history = GenerationRequest(
        model="m",
        sampling=SamplingParams(temperature=0),
        messages=(ChatMessage("user", "x"), ChatMessage("assistant", "y"), ChatMessage("user", "q")),
    )
    assert cache_key(history, tenant="t", chat=True).scope != base.scope  # type: ignore[union-attr]
    assert cache_key(replace(chat("q"), messages=(ChatMessage("assistant", "q"),)), tenant="t", chat=True) is None


def test_request_mode_and_reproducibility() -> None:
    assert request_mode(None, None) == "auto"
    assert request_mode(None, "no-cache") == "no-cache"
    assert request_mode("no-store", None) == "no-store"
    assert request_mode(None, "no-cache, no-store") == "off"
    assert request_mode("off", None) == "off"
    assert request_mode("force", "max-age=0") == "force"
    assert reproducible(chat("q")) and reproducible(replace(chat("q"), sampling=SamplingParams(temperature=0, seed=3)))
    assert not reproducible(replace(chat("q"), sampling=SamplingParams(temperature=0.7)))
    # a seed alone does not make a sampled request cacheable by default (only "cache": "force")
    assert not reproducible(replace(chat("q"), sampling=SamplingParams(temperature=1, seed=3)))


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("How do I sort a list in ascending order?", "How do I sort a list in descending order?", "antonym"),
        ("How do I sort a list?", "How do I sort a list in descending order?", "antonym"),
        ("Why is join() a string method?", "Why isn't join() a string method?", "negation"),
        ("What is new in Python 3.11?", "What is new in Python 3.12?", "number"),
        ("How do I copy a file on Windows?", "How do I copy a file on Linux?", "entity"),
        ("How do I convert a list to a tuple?", "How do I convert a list to a set?", "entity"),
        (
            "How do I access a module written in Python from C?",
            "How do I access a module written in C from Python?",
            "direction",
        ),
        ("How do I keep editors from inserting tabs?", "How do I make editors insert tabs?", "negation"),
        ("How do I avoid blocking in connect()?", "How do I block in connect()?", "negation"),
    ],
)
def test_guard_rejects_near_misses(a: str, b: str, why: str) -> None:
    assert contrast(a, b) == why


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I copy a file?", "How can I copy a file?"),
        ("Why doesn't list.sort() return the sorted list?", "Why does list.sort() not return the sorted list?"),
        ("How do I create a .pyc file?", "How do I generate a .pyc file?"),
        ("How do I keep editors from inserting tabs?", "How do I stop editors from inserting tabs?"),
    ],
)
def test_guard_lets_paraphrases_through(a: str, b: str) -> None:
    assert contrast(a, b) is None


def test_server_side_conversations_are_never_cached() -> None:
    # bad input for a cache: the same words in a conversation whose history lives on the server
    assert cache_key(replace(chat("And the next one?"), conversation_id="c-1"), tenant="t", chat=True) is None
    assert cache_key(chat("And the next one?"), tenant="t", chat=True) is not None
