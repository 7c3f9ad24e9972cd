"""Fixtures of the storage tests: the legacy databases (``tests/fixtures/legacy``) and their contents."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy"


def _load_legacy_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sovereign_legacy_fixtures", LEGACY / "make_legacy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def legacy() -> ModuleType:
    """``make_legacy.py`` as a module: the rows the legacy fixtures hold (``MESSAGES``, ``DOCS``, ...)."""
    return _load_legacy_module()


@pytest.fixture
def legacy_copy(tmp_path: Path) -> Path:
    """A private copy of ``tests/fixtures/legacy`` (opening a database migrates it in place)."""
    target = tmp_path / "legacy"
    shutil.copytree(LEGACY, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target
