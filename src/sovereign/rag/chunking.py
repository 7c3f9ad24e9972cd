"""Heading-aware chunking by tokens of the embedding model's tokenizer.

Each section (text under one heading) is cut on its own, so a chunk never straddles two sections.
Within a section, windows are ``window`` tokens long and consecutive windows share ``overlap``
tokens (the usual sliding window with stride ``window - overlap``). A window's end is pulled back
to the last sentence or line end in its final fifth when there is one, so chunks rarely stop
mid-sentence. Token positions map back to characters through the tokenizer's offsets, so chunk
text is an exact slice of the source text (nothing re-joined or normalised).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sovereign.errors import InvalidRequestError
from sovereign.rag.loaders import Section
from sovereign.rag.models import ChunkRecord

Tokenize = Callable[[str], Any]  # returns a ``tokenizers.Encoding`` (``.ids``, ``.offsets``)


@runtime_checkable
class OffsetTokenizing(Protocol):
    """Optional on an embedding backend: its own tokenizer with character offsets, so chunks are
    measured in the tokens the model will see (else the MiniLM tokenizer is used)."""

    def tokenize(self, text: str) -> Any:
        """A ``tokenizers.Encoding`` of ``text`` (``.ids``, ``.offsets``), no special tokens."""


def minilm_tokenizer() -> Tokenize:
    """The all-MiniLM-L6-v2 WordPiece tokenizer (no truncation, no special tokens)."""
    from tokenizers import Tokenizer

    from sovereign.rag.embeddings import minilm_files

    tokenizer = Tokenizer.from_file(str(Path(minilm_files()[1])))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


def sha256_hex(data: bytes | str) -> str:
    """SHA-256 of ``data`` (str is UTF-8 encoded), lowercase hex."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


class Chunker:
    """Cuts sections into token windows.

    Args:
        tokenize: the embedding model's tokenizer (see :func:`minilm_tokenizer`).
        window: tokens per chunk (>= 16).
        overlap: tokens shared by consecutive chunks of one section (0 <= overlap < window / 2).

    Raises:
        InvalidRequestError: window or overlap out of range.
    """

    def __init__(self, tokenize: Tokenize, window: int, overlap: int) -> None:
        if window < 16 or overlap < 0 or overlap * 2 >= window:
            raise InvalidRequestError(
                f"Chunk window {window} / overlap {overlap} is invalid: need window >= 16 and "
                "0 <= overlap < window / 2 (rag.chunk_tokens, rag.chunk_overlap).", param="chunk_tokens"
            )
        self.tokenize = tokenize
        self.window = window
        self.overlap = overlap

    def chunk(self, doc_id: str, title: str, sections: Sequence[Section]) -> list[ChunkRecord]:
        """Chunks of one document, ordinals 0..n-1 in reading order; empty sections yield nothing."""
        records: list[ChunkRecord] = []
        for section in sections:
            for text, tokens in self._windows(section.text):
                ordinal = len(records)
                draft = ChunkRecord(f"{doc_id}:{ordinal}", doc_id, ordinal, section.heading, text, "", tokens)
                records.append(
                    ChunkRecord(draft.chunk_id, doc_id, ordinal, section.heading, text,
                                sha256_hex(draft.embed_text(title)), tokens)
                )
        return records

    def _windows(self, text: str) -> list[tuple[str, int]]:
        """``(chunk text, token count)`` windows of one section."""
        if not text.strip():
            return []
        offsets: list[tuple[int, int]] = list(self.tokenize(text).offsets)
        n = len(offsets)
        if n <= self.window:
            return [(text.strip(), n)]
        out: list[tuple[str, int]] = []
        start = 0
        while start < n:
            end = min(start + self.window, n)
            if end < n:
                end = self._sentence_end(text, offsets, start, end)
            piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
            if piece:
                out.append((piece, end - start))
            if end >= n:
                break
            start = max(end - self.overlap, start + 1)
        return out

    def _sentence_end(self, text: str, offsets: list[tuple[int, int]], start: int, end: int) -> int:
        """Largest ``e`` in the window's last fifth whose token ends a sentence or line; else ``end``."""
        floor = start + (self.window * 4) // 5
        for e in range(end, floor, -1):
            char_end = offsets[e - 1][1]
            last = text[char_end - 1 : char_end]
            following = text[char_end : char_end + 1]
            if last in ".!?:" and (following in (" ", "\n", "")):
                return e
            if following == "\n":
                return e
        return end
