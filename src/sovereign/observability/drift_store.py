"""Where drift observations and baselines live: ``data_dir/drift.sqlite`` (WAL), shared by the workers.

Schema (store ``drift`` in :class:`~sovereign.storage.Migrations`)::

    drift_observations(at REAL, signal TEXT, category TEXT NULL, value REAL NULL)
        at: Unix seconds of the request; a row has a category (categorical signal) or a value.
    drift_baselines(id INTEGER PRIMARY KEY, name TEXT, created_at REAL, body TEXT)
        body: a :class:`Baseline` as JSON (``format`` 1); the newest row of a name is in force.

Each worker's flush inserts its rows in one transaction; readers never wait for it (WAL). The
window a check reads is every categorical count since ``since`` and, per numeric signal, the
newest :data:`WINDOW_VALUES` values. Rows older than twice the window are pruned by the flush.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovereign.storage import Migrations, SqliteWorker, execute_script

MIGRATIONS: Migrations[Callable[[sqlite3.Connection], None]] = Migrations("drift")
BASELINE_FORMAT = 1
BASELINE_VALUES = 5_000
"""Numeric values kept per signal in a baseline (a uniform sample): KS and PSI need no more."""
WINDOW_VALUES = 50_000
"""Newest numeric values per signal a check reads from the window."""
KEEP_BASELINES = 10

Row = tuple[float, str, str | None, float | None]
"""``(at, signal, category, value)``: one observation row."""


@MIGRATIONS.step
def m001_initial(conn: sqlite3.Connection) -> None:
    execute_script(conn, """
        CREATE TABLE IF NOT EXISTS drift_observations (
            at REAL NOT NULL, signal TEXT NOT NULL, category TEXT, value REAL);
        CREATE INDEX IF NOT EXISTS drift_observations_signal_at ON drift_observations (signal, at);
        CREATE INDEX IF NOT EXISTS drift_observations_at ON drift_observations (at);
        CREATE TABLE IF NOT EXISTS drift_baselines (
            id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, created_at REAL NOT NULL, body TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS drift_baselines_name ON drift_baselines (name, id)
    """)


@dataclass(slots=True)
class Window:
    """What the gateway saw since ``since`` (Unix seconds): ``categorical`` signal -> category ->
    count; ``numeric`` signal -> values (newest first); ``oldest`` the first row's time in the table
    (None when empty), which says whether a whole window has been recorded yet."""

    since: float
    until: float
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    numeric: dict[str, list[float]] = field(default_factory=dict)
    oldest: float | None = None


@dataclass(slots=True)
class Baseline:
    """A named snapshot of a window: category counts per signal, up to :data:`BASELINE_VALUES`
    numeric values per signal. ``id`` is the row id (the version; 0 before it is saved)."""

    name: str
    created_at: float
    since: float
    until: float
    categorical: dict[str, dict[str, int]]
    numeric: dict[str, list[float]]
    id: int = 0

    def to_json(self) -> str:
        return json.dumps({"format": BASELINE_FORMAT, "name": self.name, "created_at": self.created_at,
                           "since": self.since, "until": self.until, "categorical": self.categorical,
                           "numeric": self.numeric})

    @classmethod
    def from_json(cls, row_id: int, text: str) -> Baseline:
        """Raises ValueError for a body of another ``format``."""
        body = json.loads(text)
        if body.get("format") != BASELINE_FORMAT:
            raise ValueError(f"drift baseline {row_id} has format {body.get('format')!r}, not {BASELINE_FORMAT}")
        return cls(body["name"], body["created_at"], body["since"], body["until"], body["categorical"],
                   body["numeric"], row_id)

    def summary(self) -> dict[str, Any]:
        """``{"id", "name", "created_at", "since", "until", "n": {signal: count}}`` for the report."""
        n = {s: sum(c.values()) for s, c in self.categorical.items()} | {s: len(v) for s, v in self.numeric.items()}
        return {"id": self.id, "name": self.name, "created_at": self.created_at, "since": self.since,
                "until": self.until, "n": n}


def _insert(conn: sqlite3.Connection, rows: Sequence[Row], prune_before: float) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT INTO drift_observations (at, signal, category, value) VALUES (?, ?, ?, ?)", rows)
        conn.execute("DELETE FROM drift_observations WHERE at < ?", (prune_before,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _window(conn: sqlite3.Connection, since: float, until: float) -> Window:
    window = Window(since, until)
    for signal, category, count in conn.execute(
            "SELECT signal, category, COUNT(*) FROM drift_observations WHERE at >= ? AND at <= ? "
            "AND category IS NOT NULL GROUP BY signal, category", (since, until)):
        window.categorical.setdefault(signal, {})[category] = count
    signals = [r[0] for r in conn.execute(
        "SELECT DISTINCT signal FROM drift_observations WHERE value IS NOT NULL AND at >= ?", (since,))]
    for signal in signals:
        window.numeric[signal] = [r[0] for r in conn.execute(
            "SELECT value FROM drift_observations WHERE signal = ? AND at >= ? AND at <= ? AND value IS NOT NULL "
            "ORDER BY at DESC LIMIT ?", (signal, since, until, WINDOW_VALUES))]
    window.oldest = conn.execute("SELECT MIN(at) FROM drift_observations").fetchone()[0]
    return window


def _save_baseline(conn: sqlite3.Connection, baseline: Baseline, only_if_absent: bool) -> int:
    conn.execute("BEGIN IMMEDIATE")  # two workers auto-capturing at once: the second sees the first's row
    try:
        if only_if_absent and conn.execute("SELECT 1 FROM drift_baselines WHERE name = ?",
                                           (baseline.name,)).fetchone():
            conn.execute("ROLLBACK")
            return 0
        cur = conn.execute("INSERT INTO drift_baselines (name, created_at, body) VALUES (?, ?, ?)",
                           (baseline.name, baseline.created_at, baseline.to_json()))
        conn.execute("DELETE FROM drift_baselines WHERE name = ? AND id NOT IN (SELECT id FROM drift_baselines "
                     "WHERE name = ? ORDER BY id DESC LIMIT ?)", (baseline.name, baseline.name, KEEP_BASELINES))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(cur.lastrowid or 0)


def _baseline(conn: sqlite3.Connection, name: str) -> Baseline | None:
    row = conn.execute("SELECT id, body FROM drift_baselines WHERE name = ? ORDER BY id DESC LIMIT 1",
                       (name,)).fetchone()
    return None if row is None else Baseline.from_json(row[0], row[1])


class DriftStore:
    """The drift database at ``path``; every call runs on its own SQLite thread.

    Errors: :class:`~sovereign.errors.StorageError` for any SQLite failure (named after ``path``);
    ConfigError when a newer Sovereign migrated the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._worker = SqliteWorker(self.path, label=f"the drift database {self.path}", thread_name="drift-sqlite")
        self.schema_version = 0

    async def open(self) -> None:
        await self._worker.aopen()
        try:
            self.schema_version = await self._worker.run(MIGRATIONS.apply)
        except BaseException:
            await self._worker.aclose()
            raise

    async def close(self) -> None:
        await self._worker.aclose()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the store's thread (off the event loop; the flush derives values there)."""
        return await self._worker.run(lambda _conn: fn(*args))

    async def insert(self, rows: Sequence[Row], prune_before: float) -> None:
        """Insert ``rows`` and delete rows older than ``prune_before`` (Unix s), one transaction."""
        await self._worker.run(_insert, rows, prune_before)

    async def window(self, since: float, until: float | None = None) -> Window:
        return await self._worker.run(_window, since, time.time() if until is None else until)

    async def save_baseline(self, baseline: Baseline, *, only_if_absent: bool = False) -> int:
        """Store ``baseline`` as the newest of its name (the last :data:`KEEP_BASELINES` are kept).

        Returns:
            Its id, or 0 when ``only_if_absent`` and the name already has one (nothing written).
        """
        return int(await self._worker.run(_save_baseline, baseline, only_if_absent))

    async def baseline(self, name: str) -> Baseline | None:
        """The newest baseline called ``name``, or None."""
        return await self._worker.run(_baseline, name)
