"""Public model names -> backends, and the engine kinds that configuration can name.

An engine kind is a factory registered through the ``register_engines`` hook
(:mod:`sovereign.hookspecs`); the built-in kinds (``embedded``, a managed llama-server, and the
OpenAI-compatible remote engines) register through the same hook in
:mod:`sovereign.backends.engine_kinds`, exactly as a plugin's would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sovereign import plugins
from sovereign.backends.base import Capabilities, ChatBackend, EmbeddingBackend
from sovereign.errors import ModelNotFoundError
from sovereign.plugins import Kinds

if TYPE_CHECKING:
    import httpx

    from sovereign.config import DeploymentSettings, Settings


@dataclass(frozen=True, slots=True)
class EngineContext:
    """What an engine factory may use besides its deployment's settings.

    Attributes:
        settings: the whole configuration (``[engine]`` for managed engines).
        client: the gateway's shared HTTP connection pool for remote engines.
        connect_timeout_s, total_timeout_s: ``[backends]`` timeouts in seconds.
    """

    settings: Settings
    client: httpx.AsyncClient
    connect_timeout_s: float
    total_timeout_s: float


EngineFactory = Callable[["DeploymentSettings", EngineContext], ChatBackend]
ENGINES: Kinds[EngineFactory] = plugins.ENGINES


def default_engine(settings: Settings) -> ChatBackend:
    """The ``[engine]`` model: a managed llama-server (not started; imported on first use)."""
    from sovereign.backends.managed import ManagedLlamaServer

    return ManagedLlamaServer(settings=settings.engine)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One row of ``/v1/models``; ``alias_of`` names the public model an alias resolves to;
    ``capabilities`` (chat models) is what routing reads, ``context_window`` in tokens among them."""

    id: str
    kind: str  # "chat" or "embedding"
    owned_by: str
    alias_of: str | None = None
    capabilities: Capabilities | None = None


class ModelRegistry:
    """Resolves public model names (and aliases) to chat and embedding backends."""

    def __init__(self) -> None:
        self._chat: dict[str, ChatBackend] = {}
        self._embedding: dict[str, EmbeddingBackend] = {}
        self._aliases: dict[str, str] = {}

    def add_chat(self, backend: ChatBackend, aliases: Iterable[str] = ()) -> None:
        self._chat[backend.name] = backend
        for alias in aliases:
            self._aliases[alias] = backend.name

    def replace_chat(self, name: str, backend: ChatBackend) -> ChatBackend | None:
        """Swap the backend behind ``name`` at run time; returns the old one (caller closes it)."""
        old = self._chat.get(name)
        self._chat[name] = backend
        return old

    def add_embedding(self, backend: EmbeddingBackend, aliases: Iterable[str] = ()) -> None:
        self._embedding[backend.name] = backend
        for alias in aliases:
            self._aliases[alias] = backend.name

    def _canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def chat(self, name: str) -> ChatBackend:
        """The chat backend for ``name``. Raises ModelNotFoundError (404) naming the known models."""
        backend = self._chat.get(self._canonical(name))
        if backend is None:
            raise ModelNotFoundError(
                f"The model {name!r} does not exist. Available chat models: {', '.join(self._chat) or 'none'}.",
                param="model",
            )
        return backend

    def embedding(self, name: str) -> EmbeddingBackend:
        """The embedding backend for ``name``. Raises ModelNotFoundError (404)."""
        backend = self._embedding.get(self._canonical(name))
        if backend is None:
            raise ModelNotFoundError(
                f"The embedding model {name!r} does not exist. Available: {', '.join(self._embedding) or 'none'}.",
                param="model",
            )
        return backend

    @property
    def chat_backends(self) -> dict[str, ChatBackend]:
        return dict(self._chat)

    def models(self) -> list[ModelInfo]:
        """Every name a request may use: chat models, their aliases, embedding models, their aliases.

        An alias row has the kind and ``owned_by`` of its target, so clients see it as a model.
        """
        chat = [ModelInfo(n, "chat", b.capabilities.owned_by, capabilities=b.capabilities)
                for n, b in self._chat.items()]
        embedding = [ModelInfo(n, "embedding", "sovereign") for n in self._embedding]
        chat_aliases: list[ModelInfo] = []
        embedding_aliases: list[ModelInfo] = []
        for alias, target in self._aliases.items():
            if alias in self._chat or alias in self._embedding:
                continue  # the name is already listed once
            if target in self._chat:
                caps = self._chat[target].capabilities
                chat_aliases.append(ModelInfo(alias, "chat", caps.owned_by, target, caps))
            elif target in self._embedding:
                embedding_aliases.append(ModelInfo(alias, "embedding", "sovereign", target))
        return chat + chat_aliases + embedding + embedding_aliases

    def model(self, name: str) -> ModelInfo:
        """The ``/v1/models`` row for ``name`` (a model or an alias).

        Raises:
            ModelNotFoundError: no model or alias is called ``name``.
        """
        for row in self.models():
            if row.id == name:
                return row
        raise ModelNotFoundError(
            f"The model {name!r} does not exist. GET /v1/models lists the available ones.", param="model"
        )

    def all_ready(self) -> bool:
        return all(b.ready for b in self._chat.values())

    async def start_all(self) -> None:
        for backend in list(self._chat.values()):
            await backend.start()

    async def close_all(self) -> None:
        """Close every chat backend, then every embedding backend."""
        for backend in list(self._chat.values()):
            await backend.close()
        for embedder in list(self._embedding.values()):
            await embedder.close()
