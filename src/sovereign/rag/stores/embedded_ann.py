"""The embedded store's derived ANN indexes: one usearch HNSW index per *space* (a tenant's collection).

A space's name is the collection's for tenant ``anonymous`` (so indexes written before tenants keep
their files) and ``<collection>@<tenant tag>`` otherwise (:func:`space_name`; ``@`` cannot occur in a
collection name, and the tag is a hash: tenant ids are opaque and may hold any character). Its
file is ``ann/<space>.usearch``, keyed by chunk row id. SQLite is the source of truth: an index is
reconciled with the space's chunk rows on open and whenever the space's ``version`` in SQLite moved
past the one the index reflects (another process wrote), and mirrors this process's own writes.

:class:`SpaceIndexes` holds no connection: every method that reads SQLite takes the store's
connection and runs on the store's thread (:class:`~sovereign.storage.SqliteWorker`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from sovereign.errors import StorageError
from sovereign.rag.models import ANONYMOUS
from sovereign.rag.stores.base import tenant_tag

log = logging.getLogger("sovereign.rag.embedded")
Space = tuple[str, str]  # (tenant, collection)


def space_name(tenant: str, collection: str) -> str:
    """The name of ``tenant``'s ``collection`` index (its ANN file stem): the collection itself for
    :data:`~sovereign.rag.models.ANONYMOUS`, ``collection@<16 hex of SHA-256(tenant)>`` otherwise."""
    return collection if tenant == ANONYMOUS else f"{collection}@{tenant_tag(tenant)}"


class SpaceIndexes:
    """The in-memory indexes of one store directory and the SQLite versions they reflect.

    Args:
        directory: the store directory (files under ``directory/ann``).
        dimensions: vector length. options: usearch HNSW options (see :func:`sovereign.rag.ann.new_index`).

    Attributes:
        indexes: space name -> usearch index. versions: space name -> SQLite version it reflects.
        spaces: space name -> ``(tenant, collection)``.
    """

    def __init__(self, directory: Path, dimensions: int, options: dict[str, Any]) -> None:
        self.directory = directory
        self.dimensions = dimensions
        self.options = options
        self.indexes: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.spaces: dict[str, Space] = {}
        self.dirty: set[str] = set()

    def space(self, tenant: str, collection: str) -> str:
        """The space name of ``(tenant, collection)``, remembered for the way back."""
        name = space_name(tenant, collection)
        self.spaces[name] = (tenant, collection)
        return name

    def of_tenant(self, tenant: str) -> list[str]:
        """The space names of ``tenant`` known to this process."""
        return [name for name, (owner, _) in self.spaces.items() if owner == tenant]

    def path(self, space: str) -> Path:
        return self.directory / "ann" / f"{space}.usearch"

    def new_index(self) -> Any:
        from sovereign.rag.ann import new_index

        return new_index(self.dimensions, "cos", **self.options)

    def load_all(self, db: sqlite3.Connection) -> None:
        """Reconcile the index of every space in SQLite and delete index files of no space."""
        (self.directory / "ann").mkdir(parents=True, exist_ok=True)
        for tenant, collection in db.execute("SELECT tenant, name FROM collections").fetchall():
            self.catch_up(db, tenant, collection)
        for stale in (self.directory / "ann").glob("*.usearch"):
            if stale.stem not in self.indexes:
                stale.unlink()

    def catch_up(self, db: sqlite3.Connection, tenant: str, collection: str) -> None:
        """Reconcile the index of ``tenant``'s ``collection`` with SQLite and record the version it
        now reflects.

        Runs in one read transaction, so the version read and the chunk rows come from the same
        snapshot (WAL): a write committed meanwhile by another process bumps the version past the
        recorded one and is caught up by the next search.
        """
        space = self.space(tenant, collection)
        db.execute("BEGIN")
        try:
            row = db.execute("SELECT version FROM collections WHERE tenant = ? AND name = ?",
                             (tenant, collection)).fetchone()
            self.indexes[space] = self.reconcile(db, space, self.indexes.get(space))
            self.versions[space] = int(row[0]) if row else 0
        finally:
            db.execute("COMMIT")

    def catch_up_changed(self, db: sqlite3.Connection, tenant: str, collection: str | None = None) -> None:
        """Catch up ``tenant``'s ``collection`` (None: every collection of ``tenant``) if its SQLite
        version moved since its index was last synced.

        Another process (``sovereign ingest`` next to a running server) may have written to the
        same directory; this is one small SELECT when nothing changed.
        """
        sql, args = "SELECT name, version FROM collections WHERE tenant = ?", [tenant]
        if collection is not None:
            sql, args = sql + " AND name = ?", [tenant, collection]
        for name, version in db.execute(sql, args).fetchall():
            if self.versions.get(self.space(tenant, name)) != version:
                log.info("collection %s changed outside this process (version %s); catching up", name, version)
                self.catch_up(db, tenant, name)

    def versions_of(self, db: sqlite3.Connection, spaces: set[Space]) -> dict[str, int]:
        """Space name -> SQLite version of each ``(tenant, collection)`` that exists."""
        out: dict[str, int] = {}
        for tenant, collection in sorted(spaces):
            row = db.execute("SELECT version FROM collections WHERE tenant = ? AND name = ?",
                             (tenant, collection)).fetchone()
            if row is not None:
                out[self.space(tenant, collection)] = int(row[0])
        return out

    def advance(self, before: dict[str, int], after: dict[str, int]) -> None:
        """After the store's own committed write: a space that was in sync before it is in sync after it.

        One that was already behind (another process wrote first) stays behind, so the next search
        reconciles it in full.
        """
        for space, version in after.items():
            if self.versions.get(space, 0) == before.get(space, 0):
                self.versions[space] = version

    def reconcile(self, db: sqlite3.Connection, space: str, index: Any = None) -> Any:
        """Make ``index`` (default: the saved file) hold exactly SQLite's chunk ids of ``space``."""
        if index is not None:
            return self._sync_keys(db, space, index)
        path = self.path(space)
        index = self.new_index()
        if path.is_file():
            try:
                index.load(str(path))
            except Exception as exc:  # a torn or foreign file: rebuild from SQLite
                log.warning("ANN index %s unreadable (%s); rebuilding", path, type(exc).__name__)
                index = self.new_index()
        return self._sync_keys(db, space, index)

    def _sync_keys(self, db: sqlite3.Connection, space: str, index: Any) -> Any:
        """Add SQLite rows missing from ``index`` and remove keys SQLite no longer has; returns ``index``."""
        have = np.asarray(index.keys, dtype=np.int64) if len(index) else np.zeros(0, dtype=np.int64)
        rows = db.execute("SELECT id FROM chunks WHERE tenant = ? AND collection = ?", self.spaces[space]).fetchall()
        want = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra):
            index.remove(extra.astype(np.uint64))
        for start in range(0, len(missing), 4096):
            ids = [int(i) for i in missing[start : start + 4096]]
            marks = ",".join("?" * len(ids))
            found = db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", ids).fetchall()
            if found:
                index.add(np.array([r[0] for r in found], dtype=np.uint64),
                          np.stack([np.frombuffer(r[1], dtype=np.float32) for r in found]))
        if len(extra) or len(missing):
            log.info("ANN index %s caught up: +%d -%d", space, len(missing), len(extra))
            self.dirty.add(space)
        return index

    def apply(self, added: list[tuple[str, int, np.ndarray]], removed: list[tuple[str, list[int]]]) -> None:
        """Mirror a committed SQLite change into the in-memory indexes (files saved by :meth:`flush`):
        ``added`` ``(space, chunk row id, vector)``, ``removed`` ``(space, chunk row ids)``."""
        for space, ids in removed:
            index = self.indexes.get(space)
            if index is not None and ids:
                index.remove(np.asarray(ids, dtype=np.uint64))
                self.dirty.add(space)
        by_space: dict[str, list[tuple[int, np.ndarray]]] = {}
        for space, rowid, vector in added:
            by_space.setdefault(space, []).append((rowid, vector))
        for space, rows in by_space.items():
            index = self.indexes.setdefault(space, self.new_index())
            index.add(np.array([r[0] for r in rows], dtype=np.uint64), np.stack([r[1] for r in rows]))
            self.dirty.add(space)

    def flush(self) -> None:
        """Save every changed index file atomically. Raises StorageError."""
        for space in sorted(self.dirty):
            index = self.indexes.get(space)
            if index is None:
                continue
            # one temporary file per process: two processes saving at once never write the same file
            tmp = self.path(space).with_suffix(f".{os.getpid()}.tmp")
            try:
                index.save(str(tmp))
                tmp.replace(self.path(space))  # atomic: a crash leaves the old or the new file
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise StorageError(f"Cannot save the vector index {self.path(space)}: {exc}") from exc
        self.dirty.clear()

    def clear(self) -> None:
        """Forget every in-memory index (the store closed)."""
        self.indexes.clear()
        self.versions.clear()
