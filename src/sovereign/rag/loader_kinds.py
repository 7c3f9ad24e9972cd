"""The built-in document formats, registered through ``register_loaders`` like a plugin's."""

from __future__ import annotations

from collections.abc import Callable

from sovereign.hookspecs import hookimpl
from sovereign.rag.loaders import Loader, load_html, load_markdown, load_pdf, load_rst, load_text


@hookimpl
def register_loaders(register: Callable[[str, Loader], None]) -> None:
    """``html``, ``markdown``, ``rst`` (with Sphinx ``.rst.txt``), ``text`` and ``pdf``."""
    register("html", Loader(frozenset({".html", ".htm", ".xhtml"}), load_html))
    register("markdown", Loader(frozenset({".md", ".markdown"}), load_markdown))
    register("rst", Loader(frozenset({".rst", ".rst.txt"}), load_rst))
    register("text", Loader(frozenset({".txt", ".text"}), load_text))
    register("pdf", Loader(frozenset({".pdf"}), load_pdf))
