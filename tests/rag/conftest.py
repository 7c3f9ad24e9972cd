"""Fixtures of the document-memory tests: the real MiniLM embedder (once per session), the fixture corpus."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovereign.config import load_settings
from sovereign.rag.embeddings import OnnxMiniLMEmbedder

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "docs"


@pytest.fixture(scope="session")
def embedder() -> Iterator[OnnxMiniLMEmbedder]:
    """The real all-MiniLM-L6-v2 (int8 ONNX), shared by the session (loading costs ~0.5 s)."""
    model = OnnxMiniLMEmbedder(load_settings().embeddings)
    yield model
    model._executor.shutdown(wait=True)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A private copy of the fixture corpus (tests modify it)."""
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """Three files of three kinds (HTML, reST, Markdown) in a private tree: ``bisect.html``,
    ``howto/sorting.rst``, ``README.md``."""
    root = tmp_path / "small"
    (root / "howto").mkdir(parents=True)
    shutil.copy(CORPUS / "library" / "bisect.html", root / "bisect.html")
    shutil.copy(CORPUS / "howto" / "sorting.rst", root / "howto" / "sorting.rst")
    shutil.copy(CORPUS / "README.md", root / "README.md")
    return root
