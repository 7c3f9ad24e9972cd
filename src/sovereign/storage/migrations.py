"""Versioned schema migrations for every persistent store (SQLite and PostgreSQL).

In the style of simonw/llm's ``@migration`` (``llm/migrations.py``): each store declares an
ordered list of named steps with a decorator; a table records which ones ran, and
:meth:`Migrations.apply` runs the missing ones in definition order, each once::

    MIGRATIONS = Migrations("conversations")

    @MIGRATIONS.step
    def m001_initial(conn: sqlite3.Connection) -> None:
        execute_script(conn, SCHEMA)

The record is one table for all stores of a database, ``_sovereign_migrations(store TEXT, name
TEXT, applied_at REAL, PRIMARY KEY (store, name))`` (``applied_at`` in Unix seconds). A store's
schema version is the number of its recorded migrations. Migration 1 of every store is the DDL of
the release before this table existed, written with ``IF NOT EXISTS``, so a database of that
release is adopted: the step is a no-op on it and gets recorded.

Concurrency: the whole run is one transaction, taken for writing before the record is read
(SQLite ``BEGIN IMMEDIATE``, waiting on ``busy_timeout``; PostgreSQL
``pg_advisory_xact_lock``), so two processes opening one database at once migrate it once.

A recorded migration this code does not define means a newer Sovereign wrote the database: the
run stops with :class:`~sovereign.errors.ConfigError` before any step runs and rolls back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sovereign.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
TABLE = "_sovereign_migrations"
_RECORD_DDL = ("CREATE TABLE IF NOT EXISTS {t} (store TEXT NOT NULL, name TEXT NOT NULL, "
               "applied_at {real} NOT NULL, PRIMARY KEY (store, name))")


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated SQL statements one by one inside the caller's transaction.

    ``sqlite3.Connection.executescript`` would COMMIT the open transaction first; this does not.
    The script must have no ``;`` inside string literals.
    """
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


class Migrations(Generic[F]):
    """The ordered migrations of one store.

    Args:
        store: the store's name, recorded in the ``store`` column and named in errors.

    Register steps with :meth:`step` (their ``__name__`` is the recorded name, so never rename
    one); apply them with :meth:`apply` (a ``sqlite3.Connection``) or :meth:`apply_async` (a
    psycopg 3 ``AsyncConnection``). Extra positional arguments of apply reach every step.
    """

    def __init__(self, store: str) -> None:
        self.store = store
        self._steps: list[tuple[str, F]] = []

    @property
    def names(self) -> list[str]:
        """The step names, in the order they run."""
        return [name for name, _ in self._steps]

    @property
    def latest(self) -> int:
        """The schema version this code writes: the number of defined steps."""
        return len(self._steps)

    def step(self, fn: F) -> F:
        """Decorator: append ``fn`` as the next migration. Raises ValueError on a duplicate name."""
        if fn.__name__ in self.names:
            raise ValueError(f"Migration {fn.__name__!r} of store {self.store!r} is defined twice.")
        self._steps.append((fn.__name__, fn))
        return fn

    def _pending(self, store: str, applied: Sequence[str]) -> list[tuple[str, F]]:
        """The steps not yet in ``applied``, in order. Raises ConfigError on an unknown recorded name."""
        unknown = sorted(set(applied) - set(self.names))
        if unknown:
            raise ConfigError(
                f"The {store} store's database records migration {unknown[0]!r}, which this version does not "
                "know: it was written by a newer Sovereign. Upgrade Sovereign, or point this one at another "
                "database; nothing was changed."
            )
        done = set(applied)
        return [(name, fn) for name, fn in self._steps if name not in done]

    # -- SQLite ------------------------------------------------------------------------------
    def _recorded(self, conn: sqlite3.Connection, store: str) -> list[str] | None:
        """Names recorded for ``store``, or None when the record table does not exist yet."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone() is None:
            return None
        return [r[0] for r in conn.execute(f"SELECT name FROM {TABLE} WHERE store = ?", (store,))]

    def apply(self, conn: sqlite3.Connection, *args: Any, store: str | None = None) -> int:
        """Run the pending steps as ``step(conn, *args)`` in one ``BEGIN IMMEDIATE`` transaction.

        Up to date already: only reads, takes no write lock. ``store`` overrides the recorded name.
        Works with any ``isolation_level``; no transaction may be open on ``conn``.

        Returns:
            The schema version (the number of recorded migrations of the store).

        Raises:
            ConfigError: the database records a migration this code does not define.
            sqlite3.Error: a step or the record failed (everything rolled back).
        """
        name = store or self.store
        applied = self._recorded(conn, name)
        if applied is not None and not self._pending(name, applied):
            return len(applied)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_RECORD_DDL.format(t=TABLE, real="REAL"))
            applied = self._recorded(conn, name) or []
            for step_name, fn in self._pending(name, applied):
                fn(conn, *args)
                conn.execute(f"INSERT INTO {TABLE} (store, name, applied_at) VALUES (?, ?, ?)",
                             (name, step_name, time.time()))
            version = len(self._recorded(conn, name) or [])
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return version

    # -- PostgreSQL (psycopg 3) ----------------------------------------------------------------
    async def apply_async(self, conn: Any, *args: Any, table: str = TABLE, store: str | None = None) -> int:
        """Run the pending steps as ``await step(conn, *args)`` in one PostgreSQL transaction.

        Args:
            conn: a psycopg 3 ``AsyncConnection`` with no transaction open (autocommit or idle).
            table: the record table, optionally schema-qualified (``"rag._sovereign_migrations"``);
                a trusted identifier, never user input.
            store: overrides the recorded store name.

        The transaction first takes ``pg_advisory_xact_lock(hashtext('<table>:<store>'))``: a second
        process opening the same store waits, then finds the steps recorded.

        Returns:
            The schema version (the number of recorded migrations of the store).

        Raises:
            ConfigError: the database records a migration this code does not define.
            psycopg.Error: a step or the record failed (everything rolled back).
        """
        name = store or self.store
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{table}:{name}",))
            await conn.execute(_RECORD_DDL.format(t=table, real="DOUBLE PRECISION"))
            cur = await conn.execute(f"SELECT name FROM {table} WHERE store = %s", (name,))
            applied = [r[0] for r in await cur.fetchall()]
            pending = self._pending(name, applied)
            for step_name, fn in pending:
                await fn(conn, *args)
                await conn.execute(f"INSERT INTO {table} (store, name, applied_at) VALUES (%s, %s, %s)",
                                   (name, step_name, time.time()))
        return len(applied) + len(pending)


SqliteStep = Callable[..., None]
"""A SQLite migration step: ``step(conn: sqlite3.Connection, *args) -> None``."""
PostgresStep = Callable[..., Awaitable[None]]
"""A PostgreSQL migration step: ``async step(conn: psycopg.AsyncConnection, *args) -> None``."""
