"""Cache storage backends behind :class:`~sovereign.cache.backends.base.CacheBackend`.

Kinds (``cache.backend``) are registered through the ``register_cache_backends`` hook; the
built-ins (``sqlite``, embedded and the default; ``redis``, shared by gateway processes) in
:mod:`sovereign.cache.backends.kinds`.
"""

from __future__ import annotations

from collections.abc import Callable

from sovereign import plugins
from sovereign.cache.backends.base import CacheBackend
from sovereign.config import Settings
from sovereign.plugins import Kinds

CacheBackendFactory = Callable[[Settings], CacheBackend]
CACHE_BACKENDS: Kinds[CacheBackendFactory] = plugins.CACHE_BACKENDS


def build_backend(settings: Settings) -> CacheBackend:
    """The configured storage backend (``cache.backend``), not yet opened.

    Raises:
        ConfigError: an unknown kind (the message lists the installed ones), or the kind's own
            configuration error (e.g. redis without a URL).
    """
    return CACHE_BACKENDS.get(settings.cache.backend)(settings)


__all__ = ["CACHE_BACKENDS", "CacheBackend", "build_backend"]
