"""The plugin manager and the kind registries it fills (see :mod:`sovereign.hookspecs`).

:data:`BUILTIN` lists the modules that implement the hooks for Sovereign's own engines, stores,
cache backends, loaders, pipelines and commands; installed plugins are found through the
``sovereign`` entry-point group. Registries are filled on first use, so importing this module is
cheap and a kind's heavy driver is imported only by its factory.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Generic, TypeVar

import pluggy

from sovereign import hookspecs
from sovereign.errors import ConfigError

BUILTIN = (
    "sovereign.backends.engine_kinds",
    "sovereign.rag.stores.kinds",
    "sovereign.cache.backends.kinds",
    "sovereign.rag.loader_kinds",
    "sovereign.server.pipelines",
    "sovereign.cli.commands",
)
ENTRY_POINT_GROUP = "sovereign"

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None

T = TypeVar("T")


def manager() -> pluggy.PluginManager:
    """The process-wide plugin manager: built-ins plus every ``sovereign`` entry point."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager("sovereign")
            pm.add_hookspecs(hookspecs)
            for name in BUILTIN:
                pm.register(importlib.import_module(name), name=name)
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            _manager = pm
        return _manager


def reset() -> None:
    """Forget the manager and every registry (tests that install a plugin at run time)."""
    global _manager
    with _lock:
        _manager = None
    for registry in _REGISTRIES:
        registry.clear()


class Kinds(Generic[T]):
    """Named factories of one sort (engines, vector stores, ...), filled from one ``register_*`` hook.

    Args:
        what: the sort, in error messages (``"engine"``).
        setting: the setting that names a kind (``"backends.deployments[].engine"``).
        hook: the hook filling it (a name in :mod:`sovereign.hookspecs`).
    """

    def __init__(self, what: str, setting: str, hook: str) -> None:
        self.what, self.setting, self.hook = what, setting, hook
        self._items: dict[str, T] | None = None
        _REGISTRIES.append(self)

    def clear(self) -> None:
        self._items = None

    def _load(self) -> dict[str, T]:
        if self._items is None:
            items: dict[str, T] = {}

            def register(kind: str, factory: T) -> None:
                if kind in items:
                    raise ConfigError(f"Two plugins register the {self.what} kind {kind!r}.")
                items[kind] = factory

            manager().subset_hook_caller(self.hook, remove_plugins=[])(register=register)
            self._items = items
        return self._items

    def names(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._load())

    def get(self, kind: str) -> T:
        """The factory of ``kind``.

        Raises:
            ConfigError: no installed plugin registers ``kind``; the message lists the known kinds.
        """
        items = self._load()
        if kind not in items:
            raise ConfigError(
                f"{self.setting}: unknown {self.what} kind {kind!r}; known: {', '.join(sorted(items)) or 'none'}. "
                "A plugin adds kinds through the 'sovereign' entry point (see docs/architecture.md)."
            )
        return items[kind]

    def check(self, kind: str) -> str:
        """``kind`` when registered (settings validators), else the :meth:`get` error."""
        self.get(kind)
        return kind


_REGISTRIES: list[Kinds[Any]] = []

# The registries, here (below every room) so that settings can check kinds without importing rooms;
# each room re-exports its own with the factory type spelled out.
ENGINES: Kinds[Any] = Kinds("engine", "backends.deployments[].engine", "register_engines")
STORES: Kinds[Any] = Kinds("vector store", "rag.store", "register_vector_stores")
CACHE_BACKENDS: Kinds[Any] = Kinds("cache backend", "cache.backend", "register_cache_backends")
LOADERS: Kinds[Any] = Kinds("document loader", "ingest", "register_loaders")
PIPELINES: Kinds[Any] = Kinds("pipeline model", "pipelines", "register_pipelines")

