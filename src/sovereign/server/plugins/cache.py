"""Start-up plugin: the response cache (``state.services["cache"]``) from ``settings.cache``.

Builds the backend (``sqlite``: ``<data_dir>/cache.sqlite3``; ``redis``: the URL in the env var
``cache.redis_url_env`` names), opens it (a failure is logged and counted: the cache then answers
"miss" and the gateway serves normally), and hooks provenance invalidation on the ``rag`` service's
``on_change`` list (now if the rag plugin ran first, otherwise at the first request).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sovereign.cache.backends.base import CacheBackend
from sovereign.cache.service import ResponseCache
from sovereign.config import Settings, resolve_secret
from sovereign.errors import ConfigError, ModelNotFoundError
from sovereign.server.response_cache import hook_rag_invalidation
from sovereign.server.state import AppState

log = logging.getLogger("sovereign.cache")


def build_backend(settings: Settings) -> CacheBackend:
    """The configured storage backend (not yet opened).

    Raises:
        ConfigError: ``backend = "redis"`` without a Redis URL.
    """
    cache = settings.cache
    if cache.backend == "redis":
        from sovereign.cache.backends.redis import RedisCacheBackend

        url = resolve_secret(cache.redis_url_env)
        if not url:
            raise ConfigError(
                "cache.backend is redis but no URL: set cache.redis_url_env to the name of an environment "
                "variable holding redis://host:port/db."
            )
        return RedisCacheBackend(url, max_entries=cache.max_entries, timeout_s=cache.timeout_ms / 1000)
    from sovereign.cache.backends.sqlite import SqliteCacheBackend

    return SqliteCacheBackend(settings.data_dir / "cache.sqlite3", max_entries=cache.max_entries)


async def install(state: AppState) -> Callable[[], Awaitable[None]] | None:
    """Put a started :class:`ResponseCache` in ``state.services["cache"]``; return its close."""
    settings = state.settings
    if not settings.cache.enabled:
        return None
    try:
        embedder = state.registry.embedding(settings.embeddings.model_name)
    except ModelNotFoundError:
        log.warning(
            "no embedding model %r: the response cache runs its exact layer only", settings.embeddings.model_name
        )
        embedder = None
    cache = ResponseCache(build_backend(settings), embedder, settings.cache)
    await cache.start()
    state.services["cache"] = cache
    hook_rag_invalidation(state)
    return cache.close
