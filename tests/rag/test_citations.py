"""Citation attribution of streamed answer sentences (pure logic; the real model is in test_cli)."""

from __future__ import annotations

from sovereign.rag.citations import CitationAttributor

SOURCES = [
    "functools.lru_cache(maxsize=128) caches up to maxsize most recent calls; maxsize=None disables the LRU limit.",
    "bisect.insort inserts an item into a sorted list, keeping it sorted.",
]


def run(pieces: list[str]) -> tuple[str, CitationAttributor]:
    attributor = CitationAttributor(SOURCES)
    out = "".join(attributor.feed(p) for p in pieces) + attributor.flush()
    return out, attributor


def test_uncited_sentences_get_the_source_they_come_from() -> None:
    answer, attributor = run(["The lru_cache dec", "orator caches the most recent calls up to maxsize. ",
                              "It inserts an item into a sorted list keeping it sorted"])
    assert answer == ("The lru_cache decorator caches the most recent calls up to maxsize [1]. "
                      "It inserts an item into a sorted list keeping it sorted [2]")
    assert attributor.attributed == 2


def test_model_markers_and_unsupported_sentences_are_left_alone() -> None:
    # bad input for attribution: a sentence already cited, one sharing no words, one too short
    answer, attributor = run(["Calls are cached up to maxsize [2]. ", "Penguins enjoy cold weather today. ", "Yes."])
    assert answer == "Calls are cached up to maxsize [2]. Penguins enjoy cold weather today. Yes."
    assert attributor.attributed == 0


def test_text_is_held_back_only_until_the_sentence_ends() -> None:
    attributor = CitationAttributor(SOURCES)
    assert attributor.feed("maxsize=None disables the LRU") == ""
    assert attributor.feed(" limit.\nNext") == "maxsize=None disables the LRU limit [1].\n"
    assert attributor.flush() == "Next"
    assert CitationAttributor([]).feed("No sources at all. ") == "No sources at all. "
