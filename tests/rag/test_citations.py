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


def test_marker_goes_right_after_its_sentence_however_tokens_split() -> None:
    attributor = CitationAttributor(SOURCES)
    # trailing whitespace waits for the next text, so the marker goes before it
    assert attributor.feed("maxsize=None disables the LRU limit. ") == "maxsize=None disables the LRU limit."
    assert attributor.feed("Next") == " [1] Next"
    assert attributor.feed(" line\n") == " line"
    assert attributor.flush() == "\n"  # "Next line": too few content words to attribute; the held newline


def test_line_break_as_its_own_token_still_gets_the_marker() -> None:
    """Bad split: llama.cpp often sends "\n" alone, after the line it ends was already sent."""
    pieces = ["lru_cache caches the most recent calls up to maxsize", "\n", "\n",
              "bisect.insort inserts an item into a sorted list", "\n", "Done."]
    out, _ = run(pieces)
    assert "".join(out) == ("lru_cache caches the most recent calls up to maxsize [1]\n\n"
                            "bisect.insort inserts an item into a sorted list [2]\nDone.")
    one_char, _ = run(list("".join(pieces)))  # one character per token: the same text
    assert "".join(one_char) == "".join(out)


def test_a_sentence_citing_several_sources_is_already_cited() -> None:
    out, attributor = run(["lru_cache caches the most recent calls up to maxsize [1, 2]. ", "Next one"])
    assert "".join(out) == "lru_cache caches the most recent calls up to maxsize [1, 2]. Next one"
    assert attributor.attributed == 0


def test_model_markers_and_unsupported_sentences_are_left_alone() -> None:
    # bad input for attribution: a sentence already cited (also after its full stop), one sharing no
    # words with any source, one too short
    text = ["Calls are cached up to maxsize [2]. ", "It caches the most recent calls. ", "[1] Penguins enjoy ",
            "cold weather today. Yes."]
    out, attributor = run(text)
    assert "".join(out) == "".join(text)
    assert attributor.attributed == 0
    assert CitationAttributor([]).feed("No sources at all. ") == "No sources at all. "
