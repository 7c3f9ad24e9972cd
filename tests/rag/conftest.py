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
