"""Loaders on real documents (Sphinx HTML, reST, Markdown, a generated PDF) and token chunking."""

from __future__ import annotations

import pytest

from sovereign.errors import InvalidRequestError
from sovereign.rag.chunking import Chunker
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.rag.loaders import Section, file_kind, load_bytes
from tests.rag.conftest import CORPUS


def pdf_with_text(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF whose content stream draws ``lines`` in Helvetica."""
    stream = "BT /F1 12 Tf 72 720 Td " + " ".join(f"({line}) Tj 0 -16 Td" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = "%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n" + "".join(f"{o:010d} 00000 n \n" for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    return out.encode("latin-1")


def test_sphinx_html_keeps_title_headings_and_drops_navigation() -> None:
    doc = load_bytes((CORPUS / "library" / "functools.html").read_bytes(), "functools.html", "html")
    assert doc.title.startswith("functools — Higher-order functions")
    headings = [s.heading for s in doc.sections]
    assert "partial Objects" in headings
    text = "\n".join(s.text for s in doc.sections)
    assert "lru_cache" in text and "maxsize" in text
    for boilerplate in ("Table of Contents", "Previous topic", "Report a Bug", "Quick search", "¶"):
        assert boilerplate not in text


def test_rst_and_markdown_sections() -> None:
    rst = load_bytes((CORPUS / "howto" / "sorting.rst").read_bytes(), "sorting.rst", "rst")
    assert rst.title == "Sorting HOW TO"
    assert "Sorting Basics" in [s.heading for s in rst.sections]
    md = load_bytes(b"# Top\nintro\n\n## Part two\nbody text\n```\n# not a heading\n```\n", "x.md", "markdown")
    assert md.title == "Top"
    assert [s.heading for s in md.sections] == ["Top", "Part two"]
    assert "# not a heading" in md.sections[1].text


def test_pdf_text_is_extracted_per_page() -> None:
    doc = load_bytes(pdf_with_text(["The lru cache keeps maxsize entries."]), "a.pdf", "pdf")
    assert doc.sections[0].heading == "page 1"
    assert "maxsize" in doc.sections[0].text
    assert doc.metadata["pages"] == 1


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"caf\xe9 au lait", "text"),  # bad input: Latin-1 bytes, not UTF-8
        (b"%PDF-1.4\n1 0 obj garbage", "pdf"),  # bad input: truncated, corrupt PDF
        (b"", "pdf"),  # bad input: empty PDF
    ],
)
def test_undecodable_or_corrupt_files_raise_a_clear_error(data: bytes, kind: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        load_bytes(data, "bad", kind)
    assert info.value.code == "unparseable_document"


def test_file_kinds() -> None:
    from pathlib import Path

    assert file_kind(Path("a/b.HTML")) == "html"
    assert file_kind(Path("_sources/x.rst.txt")) == "rst"
    assert file_kind(Path("notes.txt")) == "text"
    assert file_kind(Path("image.png")) is None
    assert file_kind(Path("Makefile")) is None


def _token_span(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int]:
    """Token indices ``[first, last + 1)`` of a character span that begins and ends on token edges."""
    first = next(i for i, (s, _) in enumerate(offsets) if s == start_char)
    last = next(i for i, (_, e) in enumerate(offsets) if e == end_char)
    return first, last + 1


def test_chunks_respect_window_overlap_and_sections(embedder: OnnxMiniLMEmbedder) -> None:
    window, overlap = 64, 16
    chunker = Chunker(embedder.tokenize, window=window, overlap=overlap)
    long_text = " ".join(f"Sentence number {i} talks about caching results." for i in range(60))
    sections = [Section("Intro", "Short intro."), Section("Details", long_text)]
    chunks = chunker.chunk("doc", "Title", sections)
    assert chunks[0].text == "Short intro." and chunks[0].heading == "Intro"
    body = [c for c in chunks if c.heading == "Details"]
    assert len(body) > 3
    assert all(embedder.count_tokens(c.text) <= window for c in chunks)
    offsets = list(embedder.tokenize(long_text).offsets)
    spans = []
    for c in body:
        start = long_text.index(c.text)  # an exact slice of its own section
        spans.append(_token_span(offsets, start, start + len(c.text)))
    assert spans[0][0] == 0 and spans[-1][1] == len(offsets)  # the windows cover the whole section
    for (_, a_end), (b_first, b_end), a, b in zip(spans, spans[1:], body, body[1:], strict=False):
        shared = a_end - b_first  # tokens at the end of a that b starts with
        assert overlap - 2 <= shared <= overlap, (shared, a.text, b.text)
        shared_text = long_text[offsets[b_first][0] : offsets[a_end - 1][1]]
        assert a.text.endswith(shared_text) and b.text.startswith(shared_text)
        assert b_end > a_end  # and b moves on
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len({c.content_hash for c in chunks}) == len(chunks)


def test_a_chunk_never_straddles_two_headings(embedder: OnnxMiniLMEmbedder) -> None:
    """Short sections stay whole chunks of their own even though two would fit one window."""
    chunker = Chunker(embedder.tokenize, window=64, overlap=16)
    md = ("# Caching\nThe cache keeps recent results.\n\n## Eviction\nOld entries are evicted first.\n\n"
          "## Sizing\n" + " ".join(f"Rule {i}: size the cache by its hit rate." for i in range(30)) + "\n")
    doc = load_bytes(md.encode(), "cache.md", "markdown")
    chunks = chunker.chunk("doc", doc.title, doc.sections)
    by_heading = {s.heading: s.text for s in doc.sections}
    assert [c.heading for c in chunks[:2]] == ["Caching", "Eviction"]
    assert chunks[0].text == "The cache keeps recent results." and chunks[1].text == "Old entries are evicted first."
    assert {c.heading for c in chunks[2:]} == {"Sizing"} and len(chunks) > 3
    for c in chunks:
        assert c.text in by_heading[c.heading]  # inside its own section
        others = [h for h in by_heading if h != c.heading]
        assert not any(by_heading[h].strip()[:20] in c.text for h in others)  # and nothing of another


@pytest.mark.parametrize(("window", "overlap"), [(8, 0), (64, 32), (64, -1)])
def test_chunker_rejects_bad_window(embedder: OnnxMiniLMEmbedder, window: int, overlap: int) -> None:
    with pytest.raises(InvalidRequestError):  # bad input: window too small / overlap too large / negative
        Chunker(embedder.tokenize, window=window, overlap=overlap)
