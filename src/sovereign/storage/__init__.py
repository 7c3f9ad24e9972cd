"""Storage plumbing shared by every persistent store.

- :mod:`sovereign.storage.sqlite_worker`: :class:`SqliteWorker`, one SQLite connection on one
  thread with one set of PRAGMAs.
- :mod:`sovereign.storage.migrations`: :class:`Migrations`, versioned schema migrations recorded
  in ``_sovereign_migrations`` (SQLite and PostgreSQL).
"""

from __future__ import annotations

from sovereign.storage.migrations import Migrations, PostgresStep, SqliteStep, execute_script
from sovereign.storage.sqlite_worker import PRAGMAS, SqliteWorker

__all__ = ["PRAGMAS", "Migrations", "PostgresStep", "SqliteStep", "SqliteWorker", "execute_script"]
