"""The agent pipeline in the gateway: registers the ``sovereign-agent`` chat model.

Runs before the ``rag`` plugin (name order), so the retriever is resolved per request from
``state.services["rag"].retriever``; without document memory the retrieval node fails and every
answer degrades to the simple path with a warning (never an error). The checkpointer opens when
the registry starts the model (``AgentBackend.start``) and closes with the registry. The chat
model is resolved per call too (:class:`RegistryModel`), so routing and fallback apply to it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sovereign.agents.backend import AgentBackend
from sovereign.agents.model_access import RegistryModel, token_counter
from sovereign.agents.state import AgentDeps
from sovereign.errors import ModelNotFoundError
from sovereign.server.state import AppState

log = logging.getLogger("sovereign.agents")


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
