"""Vector stores behind one Protocol (:class:`~sovereign.rag.stores.base.VectorStore`).

Store kinds (``rag.store``) are registered through the ``register_vector_stores`` hook; the
built-ins (``embedded``, ``pgvector``) in :mod:`sovereign.rag.stores.kinds`. The heavy drivers
(usearch, psycopg) are imported only by the factory that needs them.
"""

from __future__ import annotations

from collections.abc import Callable

from sovereign import plugins
from sovereign.config import Settings
from sovereign.plugins import Kinds
from sovereign.rag.stores.base import VectorStore

StoreFactory = Callable[[Settings, int], VectorStore]
STORES: Kinds[StoreFactory] = plugins.STORES


def build_store(settings: Settings, kind: str | None = None, dimensions: int = 384) -> VectorStore:
    """A not-yet-opened store of ``kind`` (default ``settings.rag.store``) for ``dimensions``-long vectors.

    Raises:
        ConfigError: an unknown kind (the message lists the installed ones), or the kind's own
            configuration error (e.g. pgvector without a DSN).
    """
    return STORES.get(kind or settings.rag.store)(settings, dimensions)


__all__ = ["STORES", "VectorStore", "build_store"]
