"""Citation attribution of streamed answer sentences (pure logic; the real model is in test_cli)."""

from __future__ import annotations

from sovereign.rag.citations import CitationAttributor

SOURCES = [
    "functools.lru_cache(maxsize=128) caches up to maxsize most recent calls; maxsize=None disables the LRU limit.",
    "bisect.insort inserts an item into a sorted list, keeping it sorted.",
]


def run(pieces: list[str]) -> tuple[list[str], CitationAttributor]:
    attributor = CitationAttributor(SOURCES)
    return [attributor.feed(p) for p in pieces] + [attributor.flush()], attributor


def test_uncited_sentences_get_the_source_they_come_from() -> None:
    out, attributor = run(["The lru_cache dec", "orator caches the most recent calls up to maxsize.",
                           " It inserts an item into a sorted list keeping it sorted"])
    assert "".join(out) == ("The lru_cache decorator caches the most recent calls up to maxsize. [1] "
                            "It inserts an item into a sorted list keeping it sorted [2]")
    assert out[:2] == ["The lru_cache dec", "orator caches the most recent calls up to maxsize."]  # streamed as is
    assert attributor.attributed == 2


def test_marker_goes_after_text_already_sent() -> None:
    attributor = CitationAttributor(SOURCES)
    assert attributor.feed("maxsize=None disables the LRU limit. ") == "maxsize=None disables the LRU limit. "
    assert attributor.feed("Next") == "[1] Next"  # the space was already out: marker, then a space
    assert attributor.feed(" line\n") == " line\n"
    assert attributor.flush() == ""  # "Next line": too few content words to attribute


def test_model_markers_and_unsupported_sentences_are_left_alone() -> None:
    # bad input for attribution: a sentence already cited (also after its full stop), one sharing no
    # words with any source, one too short
    text = ["Calls are cached up to maxsize [2]. ", "It caches the most recent calls. ", "[1] Penguins enjoy ",
            "cold weather today. Yes."]
    out, attributor = run(text)
    assert "".join(out) == "".join(text)
    assert attributor.attributed == 0
    assert CitationAttributor([]).feed("No sources at all. ") == "No sources at all. "
