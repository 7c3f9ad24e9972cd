"""The extension door: every hook a Sovereign plugin can implement (pluggy, as simonw/llm does).

A plugin is a module or package that implements some of these hooks with ``@hookimpl`` and is
registered under the ``sovereign`` entry-point group::

    [project.entry-points.sovereign]
    my_engine = "my_package.plugin"

The built-in engines, stores, cache backends, loaders, pipeline models and CLI commands register
through the same hooks (their modules are listed in :data:`sovereign.plugins.BUILTIN`), so a
plugin can do anything a built-in does and core code never names a kind. Each ``register_*`` hook
receives a ``register(kind, factory)`` callable; a kind registered twice is a load error naming
both plugins.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("sovereign")
hookimpl = pluggy.HookimplMarker("sovereign")


@hookspec
def register_engines(register: Any) -> None:
    """Chat engine kinds: ``register(kind, factory)``, ``factory(deployment, context) -> ChatBackend``.

    ``deployment`` is the :class:`~sovereign.config.DeploymentSettings` naming the kind in
    ``engine = "kind"``; ``context`` is a :class:`~sovereign.backends.registry.EngineContext`
    (settings, shared HTTP client, timeouts). The backend should satisfy
    :class:`~sovereign.testing.chat_backend_contract.ChatBackendContract`.
    """


@hookspec
def register_vector_stores(register: Any) -> None:
    """Vector store kinds for ``rag.store``: ``register(kind, factory)``,
    ``factory(settings, dimensions) -> VectorStore`` (not yet opened); must pass
    :class:`~sovereign.testing.vector_store_contract.VectorStoreContract`."""


@hookspec
def register_cache_backends(register: Any) -> None:
    """Response-cache storage kinds for ``cache.backend``: ``register(kind, factory)``,
    ``factory(settings) -> CacheBackend`` (not yet opened); must pass
    :class:`~sovereign.testing.cache_contract.CacheBackendContract`."""


@hookspec
def register_loaders(register: Any) -> None:
    """Document formats for ingestion: ``register(kind, loader)``; ``loader.suffixes`` are the file
    suffixes it claims and ``loader.load(data: bytes, name: str) -> LoadedDocument`` parses one file."""


@hookspec
def register_pipelines(register: Any) -> None:
    """Pipeline chat models the gateway serves beside the engines (``sovereign-rag``,
    ``sovereign-agent``): ``register(name, factory)``, ``factory(settings, registry, rag) ->
    ChatBackend | None`` with ``registry`` the :class:`~sovereign.backends.registry.ModelRegistry`
    and ``rag`` the started :class:`~sovereign.rag.service.RagService` or None (None returned: not
    served, the factory logs why)."""


@hookspec
def register_commands(cli: Any) -> None:
    """CLI commands: add commands or Typer groups to ``cli`` (the ``sovereign`` Typer app)."""
