"""Loaders: one source file -> a title and a list of sections (heading, text), by file type.

Supported: ``.txt``, ``.md``/``.markdown``, ``.rst`` (and Sphinx ``.rst.txt``), ``.html``/``.htm``
(selectolax's Lexbor parser; navigation, sidebars, scripts and footers dropped; Sphinx/Read-the-Docs
``div.body`` / ``main`` / ``article`` preferred as the content root) and ``.pdf`` (pypdf; one
section per page, heading ``page N``). Everything else is *unknown* and skipped by ingestion.

Formats are kinds registered through the ``register_loaders`` hook (built-ins in
:mod:`sovereign.rag.loader_kinds`): a plugin adds a format with one :class:`Loader`.

Errors: :class:`~sovereign.errors.InvalidRequestError` (code ``unparseable_document``) when a
file cannot be decoded or parsed; ingestion reports it and skips the file, never aborts.
Text files must be UTF-8 (a BOM is accepted); other encodings are reported, not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovereign import plugins
from sovereign.errors import InvalidRequestError
from sovereign.extras import require
from sovereign.plugins import Kinds

_DROP_SELECTORS = (
    "script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg",
    "div.related", "div.sphinxsidebar", "div.footer", "div.navigation", "div.nav", "div.sidebar",
    "div.toctree-wrapper", "a.headerlink", "div.breadcrumbs", "[role=navigation]", "[role=search]",
)
_CONTENT_SELECTORS = ("div[role=main]", "div.body", "main", "article", "div.document", "body")
_HEADING_TAGS = {"h1", "h2", "h3", "h4"}
_BLOCK_TAGS = {"p", "pre", "li", "dt", "dd", "td", "th", "blockquote", "figcaption", "caption"}
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:.])\1{2,}\s*$")


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading (``heading`` empty before the first heading)."""

    heading: str
    text: str


@dataclass(slots=True)
class LoadedDocument:
    """What a loader returns: ``title``, ordered ``sections``, and loader metadata (format, pages)."""

    title: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not any(s.text.strip() for s in self.sections)


@dataclass(frozen=True, slots=True)
class Loader:
    """One document format: the file suffixes it claims (lower case, with the dot; compound ones
    like ``.rst.txt`` allowed) and ``load(data, name) -> LoadedDocument``, raising
    :class:`~sovereign.errors.InvalidRequestError` (code ``unparseable_document``) on a bad file."""

    suffixes: frozenset[str]
    load: Callable[[bytes, str], LoadedDocument]


LOADERS: Kinds[Loader] = plugins.LOADERS


def file_kind(path: Path) -> str | None:
    """The loader kind for ``path`` (``html``, ``markdown``, ``rst``, ``text``, ``pdf``, or a
    plugin's), or None (unknown: skip). A compound suffix (``x.rst.txt``) wins over its last part."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    candidates = ["".join(suffixes), suffixes[-1]] if suffixes else []
    for suffix in candidates:
        for kind in LOADERS.names():
            if suffix in LOADERS.get(kind).suffixes:
                return kind
    return None


def looks_binary(head: bytes) -> bool:
    """True when the first bytes of a file contain NUL (how git and grep detect binary files)."""
    return b"\x00" in head


def load_bytes(data: bytes, name: str, kind: str) -> LoadedDocument:
    """Parse ``data`` (the file's bytes) as ``kind``; ``name`` is the fallback title.

    Raises:
        InvalidRequestError: undecodable text, corrupt PDF or HTML the parser rejects.
        ConfigError: no loader of that kind is installed.
    """
    return LOADERS.get(kind).load(data, name)


def load_text(data: bytes, name: str) -> LoadedDocument:
    """Plain UTF-8 text: one section."""
    return LoadedDocument(title=name, sections=[Section("", _decode(data, name).strip())], metadata={"format": "text"})


def load_html(data: bytes, name: str) -> LoadedDocument:
    """HTML (selectolax, extra ``rag``): headings become sections; navigation and chrome are dropped."""
    require("selectolax", extra="rag", feature="HTML ingestion")
    return _load_html(_decode(data, name), name)


def load_markdown(data: bytes, name: str) -> LoadedDocument:
    """Markdown: ATX headings (``#``) start sections; fenced code is kept whole."""
    return _load_lines(_decode(data, name), name, _markdown_heading, "markdown")


def load_rst(data: bytes, name: str) -> LoadedDocument:
    """reStructuredText: underlined titles start sections."""
    return _load_lines(_decode(data, name), name, _rst_heading, "rst")


def load_pdf(data: bytes, name: str) -> LoadedDocument:
    """PDF (pypdf, extra ``pdf``): one section per page. Raises MissingExtraError without pypdf."""
    require("pypdf", extra="pdf", feature="PDF ingestion")
    return _load_pdf(data, name)


def _unparseable(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, code="unparseable_document")


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unparseable(f"{name} is not UTF-8 text (byte {exc.start}); convert it to UTF-8.") from exc


def _clean(text: str) -> str:
    text = text.replace("\xa0", " ").replace("¶", "")
    return re.sub(r"[ \t]+", " ", text).strip()


def _load_html(text: str, name: str) -> LoadedDocument:
    from selectolax.lexbor import LexborHTMLParser

    try:
        tree = LexborHTMLParser(text)
    except Exception as exc:  # selectolax raises bare errors on pathological input
        raise _unparseable(f"{name}: the HTML parser rejected the file ({type(exc).__name__}).") from exc
    title_node = tree.css_first("title")
    title = _clean(title_node.text()) if title_node is not None else ""
    for selector in _DROP_SELECTORS:
        for node in tree.css(selector):
            node.decompose()
    root = next((n for s in _CONTENT_SELECTORS if (n := tree.css_first(s)) is not None), None)
    if root is None:
        return LoadedDocument(title=title or name, sections=[], metadata={"format": "html"})
    sections: list[Section] = []
    heading, parts = "", list[str]()
    for node in root.traverse(include_text=False):
        tag = node.tag
        if tag in _HEADING_TAGS:
            if parts:
                sections.append(Section(heading, "\n".join(parts)))
            heading, parts = _clean(node.text(deep=True)), []
            if not title and tag == "h1":
                title = heading
        elif tag in _BLOCK_TAGS and not _inside_block(node, root):
            raw = node.text(deep=True)
            body = raw if tag == "pre" else _clean(raw.replace("\n", " "))
            if body.strip():
                parts.append(body.rstrip())
    if parts:
        sections.append(Section(heading, "\n".join(parts)))
    h1 = root.css_first("h1")
    if h1 is not None and (not title or " — " in title or " documentation" in title):
        title = _clean(h1.text(deep=True)) or title
    return LoadedDocument(title=title or name, sections=sections, metadata={"format": "html"})


def _inside_block(node: Any, root: Any) -> bool:
    """A block nested in another block (``li > p``) is emitted once, by its outermost block."""
    parent = node.parent
    while parent is not None and parent is not root and parent.tag != "html":
        if parent.tag in _BLOCK_TAGS:
            return True
        parent = parent.parent
    return False


def _markdown_heading(lines: list[str], i: int) -> tuple[str, int] | None:
    match = _MD_HEADING.match(lines[i])
    return (match.group(2).strip(), 1) if match else None


def _rst_heading(lines: list[str], i: int) -> tuple[str, int] | None:
    line = lines[i].rstrip()
    nxt = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
    if line.strip() and not _RST_UNDERLINE.match(line) and _RST_UNDERLINE.match(nxt) and len(nxt) >= len(
        line.strip()
    ):
        return line.strip(), 2
    if _RST_UNDERLINE.match(line) and i + 2 < len(lines) and _RST_UNDERLINE.match(lines[i + 2].rstrip()):
        title = lines[i + 1].strip()
        if title:
            return title, 3
    return None


def _load_lines(text: str, name: str, detect: Any, fmt: str) -> LoadedDocument:
    lines = text.splitlines()
    sections: list[Section] = []
    heading, parts, title = "", list[str](), ""
    i = 0
    in_fence = False
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            in_fence = not in_fence
        found = None if in_fence else detect(lines, i)
        if found is not None:
            if "\n".join(parts).strip():
                sections.append(Section(heading, "\n".join(parts).strip()))
            heading, parts = found[0], []
            title = title or heading
            i += found[1]
            continue
        parts.append(lines[i])
        i += 1
    if "\n".join(parts).strip():
        sections.append(Section(heading, "\n".join(parts).strip()))
    return LoadedDocument(title=title or name, sections=sections, metadata={"format": fmt})


def _load_pdf(data: bytes, name: str) -> LoadedDocument:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = (info.title if info is not None and info.title else "") or name
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise _unparseable(f"{name}: corrupt or encrypted PDF ({type(exc).__name__}).") from exc
    sections = [Section(f"page {n}", _clean_pdf(t)) for n, t in enumerate(pages, 1) if t.strip()]
    return LoadedDocument(title=str(title), sections=sections, metadata={"format": "pdf", "pages": len(pages)})


def _clean_pdf(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()
