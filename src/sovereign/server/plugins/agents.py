"""The agent pipeline in the gateway: registers the ``sovereign-agent`` chat model.

Runs before the ``rag`` plugin (name order), so the retriever is resolved per request from
``state.services["rag"].retriever``; without document memory the retrieval node fails and every
answer degrades to the simple path with a warning (never an error). The checkpointer opens when
the registry starts the model (``AgentBackend.start``) and closes with the registry. The chat
model is resolved per call too (:class:`RegistryModel`), so routing and fallback apply to it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sovereign.agents.backend import AgentBackend
from sovereign.agents.state import AgentDeps
from sovereign.backends.base import Capabilities, ChatBackend
from sovereign.backends.registry import ModelRegistry
from sovereign.errors import ModelNotFoundError
from sovereign.server.state import AppState
from sovereign.types import GenerationChunk, GenerationRequest

log = logging.getLogger("sovereign.agents")


class RegistryModel:
    """The chat backend serving ``name``, looked up in the registry on every call, so a backend
    swapped in later (the routing plugin's fallback router, a hot swap) is the one the agent uses.
    Implements :class:`~sovereign.backends.base.ChatBackend`; ``close`` is a no-op (the registry
    owns the backend)."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self._registry = registry
        self.name = name

    def _backend(self) -> ChatBackend:
        return self._registry.chat(self.name)

    @property
    def capabilities(self) -> Capabilities:
        return self._backend().capabilities

    @property
    def ready(self) -> bool:
        return self._backend().ready

    async def start(self) -> None:
        await self._backend().start()

    async def close(self) -> None:
        return None

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self._backend().count_prompt_tokens(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        return self._backend().stream(request)

    def tokenize(self, text: str) -> list[int]:
        """Token ids under the backend's tokenizer; AttributeError when it has none."""
        tokenize = getattr(self._backend(), "tokenize", None)
        if tokenize is None:
            raise AttributeError("tokenize")
        return list(tokenize(text))


def token_counter(model: Any) -> Callable[[str], int]:
    """Tokens of a text under ``model``'s tokenizer when it has one and is loaded, else ~4 chars/token."""

    def count(text: str) -> int:
        if getattr(model, "ready", False):
            try:
                return len(model.tokenize(text))
            except AttributeError:
                pass
        return len(text) // 4 + 1

    return count


async def install(state: AppState) -> Callable[[], Awaitable[None]] | None:
    settings = state.settings
    model_name = settings.agents.model or settings.engine.model_name
    try:
        state.registry.chat(model_name)
    except ModelNotFoundError:
        log.warning("sovereign-agent not registered: chat model %r is not served", model_name)
        return None
    try:
        embedder = state.registry.embedding(settings.embeddings.model_name)
    except ModelNotFoundError:
        embedder = None

    def retriever() -> Any:
        service = state.services.get("rag")
        return getattr(service, "retriever", None)

    model = RegistryModel(state.registry, model_name)
    deps = AgentDeps(model=model, retriever=retriever, embedder=embedder, settings=settings.agents,
                     count_tokens=token_counter(model), collection=settings.rag.default_collection)
    state.registry.add_chat(AgentBackend(deps, settings.data_dir))
    return None
