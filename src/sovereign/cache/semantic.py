"""The semantic layer: an in-process vector index per scope, and the contrast guard.

**Index.** One usearch HNSW index (inner product on unit vectors = cosine) per scope, so a search
never crosses scopes and costs O(log n) in the scope's size; scopes under ``EXACT_BELOW`` entries
are searched exhaustively (exact recall). The graph stores int8-quantized vectors: a search at
100k entries reads 384-byte instead of 1,536-byte vectors and is about 2.4x faster
(``bench/cache_bench.py``), with the same recall. The int8 scores only choose ``OVERFETCH x k``
candidates; each is then re-scored exactly against its float32 vector ``[384]``
(all-MiniLM-L6-v2), so the similarity threshold is compared with the true cosine.
Memory (measured, RSS): about 2.5 KB per entry, ~250 MB for 100k: the float32 vector (1.5 KB)
plus 1.0 KB for the int8 vector, graph links and key maps.

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
OVERFETCH = 2  # int8 candidates per wanted result, re-scored in float32

# Negation words, plus the verbs that negate their object ("keep/stop/prevent X from doing", "avoid").
_NEGATION = re.compile(
    r"\b(?:not|no|never|without|cannot|none|nothing|neither|nor|nobody|avoid|prevent)\b|n't\b"
    r"|\b(?:keep|stop)\s+(?:\w+\s+){0,3}?from\b"
)
# Antonym groups: (pole 0 words, pole 1 words, strict). Strict groups conflict when one question
# names a pole and the other names the other pole *or none* ("sort" vs "sort descending"); loose
# groups only when both name a pole and the poles differ ("read the file" vs "get the file" pass).
_ANTONYMS: list[tuple[str, str, bool]] = [
    (
        "ascending|asc|increasing|smallest|lowest|oldest|earliest",
        "descending|desc|decreasing|largest|biggest|highest|newest|latest|reverse|reversed",
        True,
    ),
    ("min|minimum|minimal", "max|maximum|maximal", True),
    ("first|leading|head|prefix", "last|trailing|tail|suffix", True),
    ("start|beginning", "end|ending|exit", False),
    ("before", "after", True),
    ("upper|uppercase", "lower|lowercase", True),
    ("most|more", "least|less|fewer", True),
    ("same|identical", "different|differ|distinct", True),
    ("positive", "negative", True),
    ("upgrade", "downgrade", True),
    ("send|sending", "receive|receiving", True),
    ("add|append|insert|push", "remove|delete|drop|pop", False),
    ("open", "close", False),
    ("enable", "disable", True),
    ("install", "uninstall", True),
    (
        "encode|encoding|encoder|serialize|compress|zip|pack",
        "decode|decoding|decoder|deserialize|decompress|unzip|unpack",
        True,
    ),
    ("read|reading|input|load|loading", "write|writing|output|save|saving|dump", False),
    ("local", "global", False),
    ("public", "private", True),
    ("static", "dynamic", True),
    ("sync|synchronous", "async|asynchronous", True),
    ("client", "server", False),
    ("mutable", "immutable", True),
    ("true", "false", True),
    ("left", "right", True),
    ("horizontal", "vertical", True),
    ("shallow", "deep", True),
    ("fast|faster|fastest|quick|quickly", "slow|slower|slowest|slowly", False),
    ("binary", "text", False),
    ("absolute", "relative", True),
    ("inner", "outer", True),
    ("import", "export", True),
    ("with", "without", False),
    ("blocking", "nonblocking|non-blocking", False),
]
_POLE: dict[str, tuple[int, int]] = {}
_STRICT: set[int] = set()
for _group, (_zero, _one, _strict) in enumerate(_ANTONYMS):
    if _strict:
        _STRICT.add(_group)
    for _pole, _words in enumerate((_zero, _one)):
        for _word in _words.split("|"):
            _POLE.setdefault(_word, (_group, _pole))

# Names must match exactly; kinds (built-in types, things) only conflict when substituted.
_NAMES = {
    "windows",
    "linux",
    "mac",
    "macos",
    "unix",
    "android",
    "ios",
    "c",
    "c++",
    "java",
    "perl",
    "javascript",
    "rust",
    "go",
    "ruby",
    "lua",
    "tcl",
    "tk",
    "tkinter",
    "gtk",
    "pyqt",
    "json",
    "xml",
    "csv",
    "html",
    "yaml",
    "sql",
    "sqlite",
    "postgresql",
    "mysql",
    "redis",
    "http",
    "https",
    "ftp",
    "smtp",
    "tcp",
    "udp",
    "utf-8",
    "ascii",
    "unicode",
    "hexadecimal",
    "octal",
    "decimal",
    "stdin",
    "stdout",
    "stderr",
    "django",
    "flask",
}
_KINDS = {
    "list",
    "lists",
    "tuple",
    "tuples",
    "dict",
    "dicts",
    "dictionary",
    "dictionaries",
    "set",
    "sets",
    "frozenset",
    "string",
    "strings",
    "str",
    "bytes",
    "bytearray",
    "int",
    "integer",
    "integers",
    "float",
    "floats",
    "complex",
    "bool",
    "boolean",
    "array",
    "arrays",
    "deque",
    "generator",
    "generators",
    "iterator",
    "lambda",
    "lambdas",
    "thread",
    "threads",
    "process",
    "processes",
    "file",
    "files",
    "directory",
    "directories",
    "socket",
    "sockets",
    "class",
    "classes",
    "module",
    "modules",
    "package",
    "packages",
    "function",
    "functions",
    "method",
    "methods",
    "object",
    "objects",
    "operator",
    "operators",
    "instance",
    "instances",
    "subclass",
    "subclasses",
    "number",
    "numbers",
    "decimal",
    "expression",
    "expressions",
    "statement",
    "statements",
    "variable",
    "variables",
}
_CANON = {
    "lists": "list",
    "tuples": "tuple",
    "dicts": "dict",
    "dictionary": "dict",
    "dictionaries": "dict",
    "sets": "set",
    "strings": "string",
    "str": "string",
    "integer": "int",
    "integers": "int",
    "floats": "float",
    "boolean": "bool",
    "arrays": "array",
    "generators": "generator",
    "lambdas": "lambda",
    "macos": "mac",
    "threads": "thread",
    "processes": "process",
    "files": "file",
    "directories": "directory",
    "sockets": "socket",
    "classes": "class",
    "modules": "module",
    "packages": "package",
    "functions": "function",
    "methods": "method",
    "objects": "object",
    "operators": "operator",
    "instances": "instance",
    "subclasses": "subclass",
    "numbers": "number",
    "expressions": "expression",
    "statements": "statement",
    "variables": "variable",
}
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    )
}
_NUMBER_WORDS.update(
    {
        "single": "1",
        "second": "2",
        "third": "3",
        "fourth": "4",
        "fifth": "5",
        "multi": "n",
        "multiple": "n",
        "multidimensional": "n",
    }
)
_TOKEN = re.compile(r"[A-Za-z_][\w+\-]*(?:\.[\w]+)*(?:\(\))?|\d+(?:\.\d+)*")
_IGNORED_NAMES = {"i", "python", "cpython", "is", "how", "what", "why", "can", "does", "do", "when", "where"}
_DIRECTIONS = {"from": "from", "to": "to", "into": "to", "in": "in"}
_SKIP = {"a", "an", "the", "my", "your", "some", "any"}


@dataclass(frozen=True, slots=True)
class Features:
    """What the guard compares: negation, antonym poles, numbers, names, kinds and directions."""

    negated: bool
    poles: frozenset[tuple[int, int]]
    numbers: frozenset[str]
    names: frozenset[str]
    kinds: frozenset[str]
    directions: frozenset[tuple[str, str]]


def _is_name(raw: str, word: str, position: int) -> bool:
    if word in _NAMES:
        return True
    if word in _IGNORED_NAMES or word in _KINDS:
        return False
    return (
        any(c in raw for c in "._()")
        or any(c.isdigit() for c in raw)
        or (position > 0 and raw[0].isupper())
        or any(c.isupper() for c in raw[1:])
    )


def features(text: str) -> Features:
    """Extract guard features from a question (plain text; case matters for names)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    poles, numbers, names, kinds, directions = set(), set(), set(), set(), set()
    tokens = [(m.group(0), m.group(0).lower()) for m in _TOKEN.finditer(text)]
    for i, (raw, word) in enumerate(tokens):
        for part in (word, *word.split("-")) if "-" in word else (word,):
            if part in _POLE:
                poles.add(_POLE[part])
            if part in _NUMBER_WORDS:
                numbers.add(_NUMBER_WORDS[part])
        if word[0].isdigit():
            numbers.add(word)
        elif _is_name(raw, word, i):
            names.add(_CANON.get(word, word))
        elif word in _KINDS:
            kinds.add(_CANON.get(word, word))
        if word in _DIRECTIONS:
            following = [w for _, w in tokens[i + 1 : i + 4] if w not in _SKIP]
            if following:
                directions.add((_DIRECTIONS[word], _CANON.get(following[0], following[0])))
    return Features(
        bool(_NEGATION.search(text.lower())),
        frozenset(poles),
        frozenset(numbers),
        frozenset(names),
        frozenset(kinds),
        frozenset(directions),
    )


def _pole_conflict(a: frozenset[tuple[int, int]], b: frozenset[tuple[int, int]]) -> bool:
    for group in {g for g, _ in a | b}:
        pa, pb = {p for g, p in a if g == group}, {p for g, p in b if g == group}
        if pa != pb and (group in _STRICT or (pa and pb)):
            return True
    return False


def contrast(a: str, b: str) -> str | None:
    """Why questions ``a`` and ``b`` must not share an answer (``negation``, ``antonym``, ``number``,
    ``entity``, ``direction``), or None when the guard finds no conflict."""
    fa, fb = features(a), features(b)
    if fa.negated != fb.negated:
        return "negation"
    if _pole_conflict(fa.poles, fb.poles):
        return "antonym"
    if fa.numbers != fb.numbers:
        return "number"
    if fa.names != fb.names or (fa.kinds - fb.kinds and fb.kinds - fa.kinds):
        return "entity"
    shared = {p for p, _ in fa.directions} & {p for p, _ in fb.directions}
    if {d for d in fa.directions if d[0] in shared} != {d for d in fb.directions if d[0] in shared}:
        return "direction"
    return None


def _new_index(dimensions: int) -> Any:
    """A usearch inner-product index over int8-quantized unit vectors (imported lazily: see
    sovereign.rag.ann)."""
    from sovereign.rag.ann import new_index

    return new_index(dimensions, "ip", dtype="i8")


@dataclass(slots=True)
class _Scope:
    index: Any
    keys: dict[int, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    expires: dict[int, float] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # float32, for exact re-scoring


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
        unit = np.ascontiguousarray(vector, dtype=np.float32)
        bucket.index.add(ident, unit)
        bucket.keys[ident], bucket.ids[key], bucket.expires[ident], bucket.vectors[ident] = key, ident, expires, unit
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
        bucket.vectors.pop(ident, None)
        bucket.index.remove(ident)
        if not bucket.ids:
            del self._scopes[scope]
        return True

    def clear(self) -> None:
        self._scopes.clear()
        self._where.clear()

    def search(
        self, scope: str, vector: np.ndarray, *, k: int = 4, now: float, min_score: float = -1.0
    ) -> list[tuple[str, float]]:
        """Up to ``k`` live ``(key, cosine)`` in ``scope`` with cosine >= ``min_score``, best first
        (expired ids are skipped; cosines are exact float32 dot products)."""
        bucket = self._scopes.get(scope)
        if bucket is None:
            return []
        size = len(bucket.ids)
        query = np.asarray(vector, dtype=np.float32)
        matches = bucket.index.search(query, min(k * OVERFETCH, size), exact=size < EXACT_BELOW)
        scored = []
        for ident in matches.keys.tolist():
            stored = bucket.vectors.get(ident)
            if stored is not None and bucket.expires[ident] > now:
                score = float(stored @ query)
                if score >= min_score:
                    scored.append((bucket.keys[ident], score))
        scored.sort(key=lambda pair: pair[1], reverse=True)
        return scored[:k]

    def expired(self, now: float) -> list[str]:
        """Keys whose expiry has passed (the backend deletes them)."""
        return [b.keys[i] for b in self._scopes.values() for i, t in b.expires.items() if t <= now]
