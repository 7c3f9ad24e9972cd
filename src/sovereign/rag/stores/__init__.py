"""Vector stores behind one Protocol (:class:`~sovereign.rag.stores.base.VectorStore`).

:func:`build_store` is the one place that maps ``rag.store`` to an implementation; the heavy
drivers (usearch, psycopg) are imported only by the module that needs them.
"""

from __future__ import annotations

from sovereign.config import Settings, resolve_secret
from sovereign.errors import ConfigError
from sovereign.rag.stores.base import VectorStore


def build_store(settings: Settings, kind: str | None = None, dimensions: int = 384) -> VectorStore:
    """A not-yet-opened store of ``kind`` (default ``settings.rag.store``).

    The embedded store lives in ``<data_dir>/rag``; pgvector reads its DSN from the environment
    variable named by ``rag.pg_dsn_env``.

    Raises:
        ConfigError: pgvector selected but no DSN configured, or an unknown kind.
    """
    rag = settings.rag
    kind = kind or rag.store
    if kind == "embedded":
        from sovereign.rag.stores.embedded import EmbeddedStore

        return EmbeddedStore(settings.data_dir / "rag", dimensions, connectivity=rag.ann_connectivity,
                             expansion_add=rag.ann_expansion_add, expansion_search=rag.ann_expansion_search)
    if kind == "pgvector":
        from sovereign.rag.stores.pgvector import PgVectorStore

        dsn = resolve_secret(rag.pg_dsn_env)
        if not dsn:
            raise ConfigError("The pgvector store needs a DSN: set rag.pg_dsn_env to the name of an "
                              "environment variable holding it (e.g. postgresql://user@host/db).")
        return PgVectorStore(dsn, dimensions, schema=rag.pg_schema, m=rag.pg_hnsw_m,
                             ef_construction=rag.pg_hnsw_ef_construction, ef_search=rag.pg_hnsw_ef_search,
                             halfvec=rag.pg_halfvec, pool_max=rag.pg_pool_max)
    raise ConfigError(f"Unknown rag.store {kind!r}: use 'embedded' or 'pgvector'.")


__all__ = ["VectorStore", "build_store"]
