"""Public model names -> backends, and the one door through which engines are added.

An engine kind is a factory registered with :func:`register_engine`; the built-in embedded engine
(kind ``embedded``, a managed llama-server) registers through the same call as any plugin
(``sovereign.engines`` entry points are loaded too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from sovereign.backends.base import ChatBackend, EmbeddingBackend
from sovereign.errors import ConfigError, ModelNotFoundError

EngineFactory = Callable[..., ChatBackend]
_ENGINES: dict[str, EngineFactory] = {}


def register_engine(kind: str, factory: EngineFactory) -> None:
    """Make engine ``kind`` available to configuration (``engine = "kind"`` in a deployment)."""
    _ENGINES[kind] = factory


def engine_factory(kind: str) -> EngineFactory:
    """The factory for ``kind``; loads ``sovereign.engines`` entry points on first miss.

    Raises:
        ConfigError: no engine of that kind is installed.
    """
    if kind not in _ENGINES:
        for ep in entry_points(group="sovereign.engines"):
            if ep.name == kind:
                register_engine(kind, ep.load())
    if kind not in _ENGINES:
        raise ConfigError(f"Unknown engine kind {kind!r}; known: {', '.join(sorted(_ENGINES)) or 'none'}.")
    return _ENGINES[kind]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One row of ``/v1/models``; ``alias_of`` names the public model an alias resolves to."""

    id: str
    kind: str  # "chat" or "embedding"
    owned_by: str
    alias_of: str | None = None


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
        chat = [ModelInfo(n, "chat", b.capabilities.owned_by) for n, b in self._chat.items()]
        embedding = [ModelInfo(n, "embedding", "sovereign") for n in self._embedding]
        chat_aliases: list[ModelInfo] = []
        embedding_aliases: list[ModelInfo] = []
        for alias, target in self._aliases.items():
            if alias in self._chat or alias in self._embedding:
                continue  # the name is already listed once
            if target in self._chat:
                chat_aliases.append(ModelInfo(alias, "chat", self._chat[target].capabilities.owned_by, target))
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
        for backend in list(self._chat.values()):
            await backend.close()


def _embedded(**kwargs: Any) -> ChatBackend:
    """The managed llama-server (imported on first use: it is the only module spawning engines)."""
    from sovereign.backends.managed import ManagedLlamaServer

    return ManagedLlamaServer(**kwargs)


register_engine("embedded", _embedded)
