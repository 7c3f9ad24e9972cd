"""Evaluation datasets: JSONL, one question per line, versioned by the SHA-256 of the file's bytes.

A line is a JSON object with these fields (only ``question`` is required)::

    question    str            what the user asks
    answer      str            the reference answer: exact/overlap match, and a retrieved chunk is
                               relevant when it contains the answer's first 8 normalized words
    pages       [str]          documents (path suffixes) that answer it: relevant chunks when there
    source      str            is no ``answer`` (``source`` is one page, as in ../shared/eval)
    id          str | int      a name for the case (default: the line number)
    collection  str            the collection searched (default: the run's)
    model       str            the model that answers (default: the run's)
    corpus, package  str       provenance, kept in the results

An unknown field, a field of the wrong type, a missing or empty question, or a line that is not a
JSON object is a :class:`DatasetError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sovereign.errors import InvalidRequestError

FIELDS: dict[str, tuple[type, ...]] = {
    "question": (str,), "answer": (str,), "pages": (list,), "source": (str,), "id": (str, int),
    "collection": (str,), "model": (str,), "corpus": (str,), "package": (str,),
}


class DatasetError(InvalidRequestError):
    """A dataset that cannot be evaluated; the message starts with ``FILE:LINE:``."""


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One question. ``line`` is 1-based; ``pages`` holds ``source`` too."""

    line: int
    id: str
    question: str
    answer: str | None = None
    pages: tuple[str, ...] = ()
    collection: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded dataset: ``sha256`` of the file's bytes is its version (``version`` = 12 hex digits)."""

    path: Path
    cases: tuple[EvalCase, ...]
    sha256: str

    @property
    def version(self) -> str:
        return self.sha256[:12]


def _case(path: Path, number: int, text: str) -> EvalCase:
    where = f"{path}:{number}"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not JSON ({exc.msg}).") from exc
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a line must be a JSON object, not {type(row).__name__}.")
    for key, value in row.items():
        if key not in FIELDS:
            raise DatasetError(f"{where}: unknown field {key!r} (fields: {', '.join(FIELDS)}).")
        if not isinstance(value, FIELDS[key]) or isinstance(value, bool):
            raise DatasetError(f"{where}: field {key!r} must be "
                               f"{' or '.join(t.__name__ for t in FIELDS[key])}, not {type(value).__name__}.")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}: the line has no question.")
    pages = row.get("pages", [])
    if not all(isinstance(p, str) and p for p in pages):
        raise DatasetError(f"{where}: field 'pages' must be a list of non-empty strings.")
    if "source" in row:
        pages = [*pages, row["source"]]
    return EvalCase(line=number, id=str(row.get("id", number)), question=question.strip(), answer=row.get("answer"),
                    pages=tuple(pages), collection=row.get("collection"), model=row.get("model"))


def load_dataset(path: Path, limit: int | None = None) -> Dataset:
    """Read and check ``path`` (blank lines are skipped); ``limit`` keeps the first N cases.

    Raises:
        DatasetError: a bad line (``FILE:LINE: reason``), an unreadable or empty file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the dataset ({exc.strerror}).") from exc
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text.") from exc
    cases = [_case(path, i, text) for i, text in enumerate(lines, 1) if text.strip()]
    if not cases:
        raise DatasetError(f"{path}: the dataset has no questions.")
    return Dataset(path=path, cases=tuple(cases[:limit] if limit else cases), sha256=hashlib.sha256(data).hexdigest())


def dvc_md5(path: Path) -> str | None:
    """The MD5 that DVC recorded for ``path`` in ``path.dvc`` (``dvc add``), None when it is not tracked:
    logged with a run so MLflow links back to the DVC version of the data."""
    tracked = path.with_name(path.name + ".dvc")
    found = re.search(r"\bmd5:\s*([0-9a-f]{32})\b", tracked.read_text()) if tracked.is_file() else None
    return found.group(1) if found else None


def describe(dataset: Dataset) -> dict[str, Any]:
    """The dataset's identity as logged with a run: path, SHA-256, DVC MD5 (or None), cases, and which
    have references."""
    return {"path": str(dataset.path), "sha256": dataset.sha256, "version": dataset.version,
            "dvc_md5": dvc_md5(dataset.path), "cases": len(dataset.cases),
            "with_answer": sum(c.answer is not None for c in dataset.cases),
            "with_pages": sum(bool(c.pages) for c in dataset.cases)}
