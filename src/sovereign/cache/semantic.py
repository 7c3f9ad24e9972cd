"""The semantic layer: an in-process vector index per scope, and the contrast guard.

**Index.** One usearch HNSW index (inner product on unit vectors = cosine) per scope, so a search
never crosses scopes and costs O(log n) in the scope's size; scopes under ``EXACT_BELOW`` entries
are searched exhaustively (exact recall). Vectors are float32 ``[384]`` (all-MiniLM-L6-v2).
Memory: about 1.7 KB per entry (vector + graph links), ~170 MB for 100k entries.

**Contrast guard.** Sentence embeddings place "sort ascending" and "sort descending" (or "Python 2"
and "Python 3") very close, so a cosine threshold alone serves near-misses. A semantic candidate is
rejected when the two questions differ in: negation; the pole of an antonym pair (ascending /
descending, min / max, encode / decode...); any number or version; or an entity token (code-like
identifiers, capitalised names, built-in types, platforms, languages). Calibrated on
``data/cache_pairs`` (see docs/cache.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from typing import Any

import numpy as np

EXACT_BELOW = 4096

_NEGATION = re.compile(r"\b(?:not|no|never|without|cannot|none|nothing|neither|nor|nobody)\b|n't\b")
_ANTONYMS: list[tuple[str, ...]] = [
    ("ascending|asc|increasing|smallest|lowest|oldest|earliest", "descending|desc|decreasing|largest|biggest|highest|newest|latest"),
    ("min|minimum|minimal", "max|maximum|maximal"),
    ("first|start|beginning|begin|prefix|leading|head", "last|end|ending|suffix|trailing|tail"),
    ("before", "after"), ("upper|uppercase|capital", "lower|lowercase"),
    ("add|append|insert|create|enable|install|open|push", "remove|delete|drop|destroy|disable|uninstall|close|pop"),
    ("encode|encoding|encoder|serialize|compress|zip|pack", "decode|decoding|decoder|deserialize|decompress|unzip|unpack"),
    ("read|reading|input|load|loading", "write|writing|output|save|saving|dump"),
    ("local", "global"), ("public", "private"), ("static", "dynamic"), ("sync|synchronous", "async|asynchronous"),
    ("client", "server"), ("mutable", "immutable"), ("true", "false"), ("left", "right"), ("horizontal", "vertical"),
    ("shallow", "deep"), ("fast|faster|fastest", "slow|slower|slowest"), ("more", "less|fewer"),
    ("binary", "text"), ("absolute", "relative"), ("inner", "outer"), ("import", "export"),
]
_POLE: dict[str, tuple[int, int]] = {}
for _group, _pair in enumerate(_ANTONYMS):
    for _pole, _words in enumerate(_pair):
        for _word in _words.split("|"):
            _POLE.setdefault(_word, (_group, _pole))

_ENTITY_WORDS = {
    "list", "lists", "tuple", "tuples", "dict", "dicts", "dictionary", "dictionaries", "set", "sets", "frozenset",
    "string", "strings", "str", "bytes", "bytearray", "int", "integer", "integers", "float", "floats", "complex",
    "bool", "boolean", "array", "arrays", "deque", "generator", "generators", "iterator", "lambda", "lambdas",
    "windows", "linux", "mac", "macos", "unix", "android", "ios", "c", "c++", "java", "perl", "javascript",
    "rust", "go", "ruby", "tcl", "tk", "tkinter", "json", "xml", "csv", "html", "yaml", "sql", "sqlite",
    "postgresql", "mysql", "redis", "http", "https", "ftp", "smtp", "tcp", "udp", "utf-8", "ascii", "unicode",
    "hexadecimal", "octal", "decimal", "stdin", "stdout", "stderr", "thread", "threads", "process", "processes",
    "file", "files", "directory", "directories", "socket", "sockets", "class", "classes", "module", "modules",
}
_CANON = {"lists": "list", "tuples": "tuple", "dicts": "dict", "dictionary": "dict", "dictionaries": "dict",
          "sets": "set", "strings": "string", "str": "string", "integer": "int", "integers": "int", "floats": "float",
          "boolean": "bool", "arrays": "array", "generators": "generator", "lambdas": "lambda", "macos": "mac",
          "threads": "thread", "processes": "process", "files": "file", "directories": "directory",
          "sockets": "socket", "classes": "class", "modules": "module"}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_TOKEN = re.compile(r"[A-Za-z_][\w+\-]*(?:\.[\w]+)*(?:\(\))?|\d+(?:\.\d+)*")
_IGNORED_NAMES = {"i", "python", "cpython", "is", "how", "what", "why", "can", "does", "do", "when", "where"}


@dataclass(frozen=True, slots=True)
class Features:
    """What the guard compares: negation, antonym poles, numbers, entities."""

    negated: bool
    poles: frozenset[tuple[int, int]]
    numbers: frozenset[str]
    entities: frozenset[str]


def features(text: str) -> Features:
    """Extract guard features from a question (plain text; case matters for names)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    lower = text.lower()
    poles, numbers, entities = set(), set(), set()
    for i, match in enumerate(_TOKEN.finditer(text)):
        raw = match.group(0)
        word = raw.lower()
        if word in _POLE:
            poles.add(_POLE[word])
        if word[0].isdigit():
            numbers.add(word)
        elif word in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[word])
        elif word in _ENTITY_WORDS:
            entities.add(_CANON.get(word, word))
        elif word not in _IGNORED_NAMES and (
            any(c in raw for c in "._()") or any(c.isdigit() for c in raw)
            or (i > 0 and raw[0].isupper()) or any(c.isupper() for c in raw[1:])
        ):
            entities.add(word)
    return Features(bool(_NEGATION.search(lower)), frozenset(poles), frozenset(numbers), frozenset(entities))


def contrast(a: str, b: str) -> str | None:
    """Why questions ``a`` and ``b`` must not share an answer (``negation``, ``antonym``, ``number``,
    ``entity``), or None when the guard finds no conflict."""
    fa, fb = features(a), features(b)
    if fa.negated != fb.negated:
        return "negation"
    if fa.poles != fb.poles:
        return "antonym"
    if fa.numbers != fb.numbers:
        return "number"
    if fa.entities != fb.entities:
        return "entity"
    return None


def _new_index(dimensions: int) -> Any:
    """A usearch inner-product index, imported lazily and *after* onnxruntime: importing usearch
    (its numkong extension) first makes a later ``import onnxruntime`` crash the process (observed
    with usearch 2.26 / onnxruntime here), and the gateway always loads the embedder."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        pass
    from usearch.index import Index

    return Index(ndim=dimensions, metric="ip", dtype="f32")


@dataclass(slots=True)
class _Scope:
    index: Any
    keys: dict[int, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    expires: dict[int, float] = field(default_factory=dict)


class VectorIndex:
    """Per-scope vector search over unit float32 vectors of ``dimensions`` length (not thread-safe:
    used from the event-loop thread only)."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._scopes: dict[str, _Scope] = {}
        self._where: dict[str, str] = {}  # exact key -> scope
        self._next = 1

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def add(self, scope: str, key: str, vector: np.ndarray, expires: float) -> None:
        """Insert or replace ``key`` in ``scope``."""
        self.remove(key)
        bucket = self._scopes.get(scope)
        if bucket is None:
            bucket = self._scopes[scope] = _Scope(_new_index(self.dimensions))
        ident, self._next = self._next, self._next + 1
        bucket.index.add(ident, np.asarray(vector, dtype=np.float32))
        bucket.keys[ident], bucket.ids[key], bucket.expires[ident] = key, ident, expires
        self._where[key] = scope

    def remove(self, key: str) -> bool:
        """Drop ``key`` if present; returns whether it was there."""
        scope = self._where.pop(key, None)
        if scope is None:
            return False
        bucket = self._scopes[scope]
        ident = bucket.ids.pop(key)
        bucket.keys.pop(ident, None)
        bucket.expires.pop(ident, None)
        bucket.index.remove(ident)
        if not bucket.ids:
            del self._scopes[scope]
        return True

    def clear(self) -> None:
        self._scopes.clear()
        self._where.clear()

    def search(self, scope: str, vector: np.ndarray, *, k: int = 4, now: float) -> list[tuple[str, float]]:
        """Up to ``k`` live ``(key, cosine)`` in ``scope``, best first (expired ids are skipped)."""
        bucket = self._scopes.get(scope)
        if bucket is None:
            return []
        size = len(bucket.ids)
        matches = bucket.index.search(
            np.asarray(vector, dtype=np.float32), min(k, size), exact=size < EXACT_BELOW
        )
        out = []
        for ident, distance in zip(matches.keys.tolist(), matches.distances.tolist(), strict=True):
            key = bucket.keys.get(int(ident))
            if key is not None and bucket.expires.get(int(ident), 0.0) > now:
                out.append((key, 1.0 - float(distance)))
        return out

    def expired(self, now: float) -> list[str]:
        """Keys whose expiry has passed (the backend deletes them)."""
        return [b.keys[i] for b in self._scopes.values() for i, t in b.expires.items() if t <= now]
