"""Citation attribution: every answer sentence that states something drawn from a source cites it.

Small local models (SmolLM2-135M is the default) often ignore "cite as [1]" in the prompt. The RAG
chain therefore checks each finished sentence of the answer as it streams: a sentence that carries
no ``[n]`` marker is attributed to the source sharing the largest fraction of its content words,
and `` [n]`` follows it when that fraction is at least :data:`MIN_OVERLAP`; a sentence that shares
too little with every source (a greeting, "the sources do not say") stays uncited. Markers the
model wrote itself are kept as written. This is post-hoc attribution by lexical overlap (the
support check of attribution evaluations such as Rashkin et al., "Measuring Attribution in Natural
Language Generation Models", 2023, reduced to word overlap so it costs microseconds per sentence).

Streaming: text passes through at once; a sentence's marker is sent as soon as the sentence is
seen to end (the next one begins), right after its punctuation (``... maxsize. [1] Next``), the
form the agents' validator also reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MIN_OVERLAP = 0.5  # fraction of a sentence's content words that must occur in the cited source
_MIN_CONTENT_WORDS = 3  # shorter sentences ("Yes.", list bullets) are not attributed
_WORD = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
# A citation marker: [2] or [1, 3] (the agents' validator reads the same form).
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# A sentence ends at . ! ? (with any citation markers that follow it: "... here. [2]") plus
# whitespace, once the next sentence has begun; or at a line break followed by text.
_BOUNDARY = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*\s+(?=[^\s\[])|\n+(?=\S)")
_STOPWORD_TEXT = (
    "the a an and or of to in on for is are was were be been it its this that these those with as by at "
    "from which what when how can you your use used using not no but if then than so do does has have "
    "will would should could may might also there their they them into about more most such other"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` (dotted names kept whole) minus stopwords and 1-2 letter words."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


class CitationAttributor:
    """Adds ``[n]`` markers to streamed answer text; source ``n`` is ``sources[n - 1]``.

    Args:
        sources: the source texts in citation order (the chunks packed into the prompt).

    Text passes through :meth:`feed` as it comes (token streaming is kept); when a sentence is seen
    to end, its marker (if any) is emitted right there, after the sentence's punctuation: ``"... maxsize.
    [1] Next ..."``. Call :meth:`flush` at the end for the last sentence's marker.
    :attr:`attributed` counts the markers this class added.
    """

    def __init__(self, sources: Sequence[str]) -> None:
        self._sources = [content_words(s) for s in sources]
        self._sentence = ""  # the current sentence
        self._sent = 0  # how much of it has been emitted (trailing whitespace is held back)
        self.attributed = 0

    def source_for(self, sentence: str) -> int | None:
        """The 1-based source ``sentence`` should cite, or None (already cited, too short, unsupported)."""
        if not self._sources or CITATION.search(sentence):
            return None
        words = content_words(sentence)
        if len(words) < _MIN_CONTENT_WORDS:
            return None
        overlaps = [len(words & source) / len(words) for source in self._sources]
        best = max(range(len(overlaps)), key=overlaps.__getitem__)
        return best + 1 if overlaps[best] >= MIN_OVERLAP else None

    def feed(self, text: str) -> str:
        """``text`` to send now: the same text, with the markers of sentences it completes inserted.
        Trailing whitespace waits for the next text (or :meth:`flush`), so a marker can always go
        right after its sentence, whichever way the model split its tokens."""
        if not self._sources:
            return text  # nothing to attribute to
        self._sentence += text
        sent = self._sent  # this much of the sentence has already gone out
        out: list[str] = []
        while (match := _BOUNDARY.search(self._sentence)) is not None:
            body = self._sentence[: match.start()] + match.group(0).rstrip()  # sentence + punctuation
            n = self.source_for(body)
            if n is not None:
                self.attributed += 1
                at = max(len(body), sent)  # after the punctuation, unless that is already out
                out.append(self._sentence[sent:at])
                out.append(f" [{n}]" if at == len(body) else f"[{n}] ")
                sent = at
            end = match.end()
            out.append(self._sentence[sent:end])
            self._sentence = self._sentence[end:]
            sent = max(0, sent - end)
        held = len(self._sentence.rstrip())
        if held > sent:
            out.append(self._sentence[sent:held])
            sent = held
        self._sent = sent
        return "".join(out)

    def flush(self) -> str:
        """The last sentence's marker (`` [n]``) and any whitespace still held back, or ""."""
        sentence, rest = self._sentence, self._sentence[self._sent :]
        self._sentence, self._sent = "", 0
        n = self.source_for(sentence) if sentence.strip() else None
        if n is None:
            return rest
        self.attributed += 1
        return f" [{n}]" + rest
