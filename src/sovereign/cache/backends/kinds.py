"""The built-in cache backends, registered through ``register_cache_backends`` like a plugin's.

- ``sqlite``: ``<data_dir>/cache.sqlite3`` (core);
- ``redis``: the URL in the env var ``cache.redis_url_env`` names (extra ``redis``).
"""

from __future__ import annotations

from collections.abc import Callable

from sovereign.cache.backends import CacheBackendFactory
from sovereign.cache.backends.base import CacheBackend
from sovereign.config import Settings, resolve_secret
from sovereign.errors import ConfigError
from sovereign.extras import require
from sovereign.hookspecs import hookimpl


def sqlite_backend(settings: Settings) -> CacheBackend:
    """The embedded SQLite backend (not opened)."""
    from sovereign.cache.backends.sqlite import SqliteCacheBackend

    return SqliteCacheBackend(settings.data_dir / "cache.sqlite3", max_entries=settings.cache.max_entries)


def redis_backend(settings: Settings) -> CacheBackend:
    """The Redis backend (not opened).

    Raises:
        ConfigError: no Redis URL configured. MissingExtraError: redis-py is not installed.
    """
    cache = settings.cache
    url = resolve_secret(cache.redis_url_env)
    if not url:
        raise ConfigError(
            "cache.backend is redis but no URL: set cache.redis_url_env to the name of an environment "
            "variable holding redis://host:port/db."
        )
    require("redis", extra="redis", feature="the Redis cache backend")
    from sovereign.cache.backends.redis import RedisCacheBackend

    return RedisCacheBackend(url, max_entries=cache.max_entries, timeout_s=cache.timeout_ms / 1000)


@hookimpl
def register_cache_backends(register: Callable[[str, CacheBackendFactory], None]) -> None:
    """``sqlite`` and ``redis``."""
    register("sqlite", sqlite_backend)
    register("redis", redis_backend)
