"""The built-in vector store kinds, registered through ``register_vector_stores`` like a plugin's.

- ``embedded``: SQLite + FTS5 + a usearch HNSW index in ``<data_dir>/rag`` (extra ``rag``);
- ``pgvector``: PostgreSQL with pgvector, DSN from the env var named by ``rag.pg_dsn_env``
  (extra ``pgvector``).
"""

from __future__ import annotations

from collections.abc import Callable

from sovereign.config import Settings, resolve_secret
from sovereign.errors import ConfigError
from sovereign.extras import require
from sovereign.hookspecs import hookimpl
from sovereign.rag.stores import StoreFactory
from sovereign.rag.stores.base import VectorStore


def embedded_store(settings: Settings, dimensions: int) -> VectorStore:
    """The embedded store (not opened). Raises MissingExtraError without usearch."""
    require("usearch", extra="rag", feature="the embedded vector store")
    from sovereign.rag.stores.embedded import EmbeddedStore

    rag = settings.rag
    return EmbeddedStore(settings.data_dir / "rag", dimensions, connectivity=rag.ann_connectivity,
                         expansion_add=rag.ann_expansion_add, expansion_search=rag.ann_expansion_search)


def pgvector_store(settings: Settings, dimensions: int) -> VectorStore:
    """The pgvector store (not opened).

    Raises:
        ConfigError: no DSN configured. MissingExtraError: psycopg / pgvector not installed.
    """
    require("psycopg", extra="pgvector", feature="the pgvector store")
    require("pgvector", extra="pgvector", feature="the pgvector store")
    from sovereign.rag.stores.pgvector import PgVectorStore

    rag = settings.rag
    dsn = resolve_secret(rag.pg_dsn_env)
    if not dsn:
        raise ConfigError("The pgvector store needs a DSN: set rag.pg_dsn_env to the name of an "
                          "environment variable holding it (e.g. postgresql://user@host/db).")
    return PgVectorStore(dsn, dimensions, schema=rag.pg_schema, m=rag.pg_hnsw_m,
                         ef_construction=rag.pg_hnsw_ef_construction, ef_search=rag.pg_hnsw_ef_search,
                         halfvec=rag.pg_halfvec, pool_max=rag.pg_pool_max)


@hookimpl
def register_vector_stores(register: Callable[[str, StoreFactory], None]) -> None:
    """``embedded`` and ``pgvector``."""
    register("embedded", embedded_store)
    register("pgvector", pgvector_store)
