"""Citation attribution: every answer sentence that states something drawn from a source cites it.

Small local models (SmolLM2-135M is the default) often ignore "cite as [1]" in the prompt. The RAG
chain therefore checks each finished sentence of the answer as it streams: a sentence that carries
no ``[n]`` marker is attributed to the source sharing the largest fraction of its content words,
and `` [n]`` is appended when that fraction is at least :data:`MIN_OVERLAP`; a sentence that shares
too little with every source (a greeting, "the sources do not say") stays uncited. Markers the
model wrote itself are kept as written. This is post-hoc attribution by lexical overlap (the
support check of attribution evaluations such as Rashkin et al., "Measuring Attribution in Natural
Language Generation Models", 2023, reduced to word overlap so it costs microseconds per sentence).

Streaming: text is held back only until the end of the current sentence (``.``, ``!``, ``?`` or a
newline followed by whitespace), so time to first token grows by at most one sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MIN_OVERLAP = 0.5  # fraction of a sentence's content words that must occur in the cited source
_MIN_CONTENT_WORDS = 3  # shorter sentences ("Yes.", list bullets) are not attributed
_WORD = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_MARKER = re.compile(r"\[\d+\]")
_BOUNDARY = re.compile(r"(?<=[.!?])\s|\n")
_STOPWORDS = frozenset(
    "the a an and or of to in on for is are was were be been it its this that these those with as by at "
    "from which what when how can you your use used using not no but if then than so do does has have "
    "will would should could may might also there their they them into about more most such other".split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` (dotted names kept whole) minus stopwords and 1-2 letter words."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


class CitationAttributor:
    """Adds ``[n]`` markers to streamed answer text; source ``n`` is ``sources[n - 1]``.

    Args:
        sources: the source texts in citation order (the chunks packed into the prompt).

    Feed text with :meth:`feed` (returns what may be emitted now) and call :meth:`flush` at the end.
    :attr:`attributed` counts the markers this class added.
    """

    def __init__(self, sources: Sequence[str]) -> None:
        self._sources = [content_words(s) for s in sources]
        self._pending = ""
        self.attributed = 0

    def cite(self, sentence: str) -> str:
        """``sentence`` with `` [n]`` appended before its trailing whitespace when it is attributable."""
        if not self._sources or _MARKER.search(sentence):
            return sentence
        words = content_words(sentence)
        if len(words) < _MIN_CONTENT_WORDS:
            return sentence
        overlaps = [len(words & source) / len(words) for source in self._sources]
        best = max(range(len(overlaps)), key=overlaps.__getitem__)
        if overlaps[best] < MIN_OVERLAP:
            return sentence
        self.attributed += 1
        body = sentence.rstrip()
        marker, tail = f" [{best + 1}]", sentence[len(body):]
        if body[-1] in ".!?":  # "... cache entries [2]." rather than "... cache entries. [2]"
            return f"{body[:-1]}{marker}{body[-1]}{tail}"
        return f"{body}{marker}{tail}"

    def feed(self, text: str) -> str:
        """Buffer ``text``; return the finished sentences (cited) that may be sent now."""
        self._pending += text
        out = []
        while (match := _BOUNDARY.search(self._pending)) is not None:
            end = match.end()
            out.append(self.cite(self._pending[:end]))
            self._pending = self._pending[end:]
        return "".join(out)

    def flush(self) -> str:
        """The rest of the answer (the last, unterminated sentence), cited."""
        rest, self._pending = self._pending, ""
        return self.cite(rest) if rest else ""
