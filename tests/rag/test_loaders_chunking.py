"""Loaders on real documents (Sphinx HTML, reST, Markdown, a generated PDF) and token chunking."""

from __future__ import annotations

import itertools

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


def test_chunks_respect_window_overlap_and_sections(embedder: OnnxMiniLMEmbedder) -> None:
    chunker = Chunker(embedder.tokenize, window=64, overlap=16)
    long_text = " ".join(f"Sentence number {i} talks about caching results." for i in range(60))
    sections = [Section("Intro", "Short intro."), Section("Details", long_text)]
    chunks = chunker.chunk("doc", "Title", sections)
    assert chunks[0].text == "Short intro." and chunks[0].heading == "Intro"
    body = [c for c in chunks if c.heading == "Details"]
    assert len(body) > 3
    assert all(embedder.count_tokens(c.text) <= 64 for c in chunks)
    assert all(c.text in long_text for c in body)  # exact slices: never straddle a section
    for a, b in itertools.pairwise(body):  # consecutive windows overlap
        assert a.text[-20:] in long_text and set(a.text.split()[-5:]) & set(b.text.split()[:20])
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert len({c.content_hash for c in chunks}) == len(chunks)


@pytest.mark.parametrize(("window", "overlap"), [(8, 0), (64, 32), (64, -1)])
def test_chunker_rejects_bad_window(embedder: OnnxMiniLMEmbedder, window: int, overlap: int) -> None:
    with pytest.raises(InvalidRequestError):  # bad input: window too small / overlap too large / negative
        Chunker(embedder.tokenize, window=window, overlap=overlap)
