"""Assemble the ``sovereign-agent`` chat model from the parts the gateway or the CLI already hold."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sovereign.agents.backend import AgentBackend
from sovereign.agents.model_access import RegistryModel
from sovereign.agents.state import AgentDeps
from sovereign.backends.registry import ModelRegistry
from sovereign.config import Settings
from sovereign.errors import ModelNotFoundError

if TYPE_CHECKING:
    from sovereign.rag.service import RagService

log = logging.getLogger("sovereign.agents")


def agent_pipeline(settings: Settings, registry: ModelRegistry, rag: RagService | None,
                   *, collection: str | None = None) -> AgentBackend | None:
    """The agent pipeline over ``registry``'s chat model (``agents.model``, else the ``[engine]``
    model), resolved per call so routing and fallback apply; None (logged) when that model is not served.

    Without document memory (``rag`` None) the retrieval node fails and every answer degrades to the
    simple path with a warning, never an error. The validator uses ``rag``'s embedder when there is
    one, else the registry's ``embeddings.model_name``, else none.
    """
    model_name = settings.agents.model or settings.engine.model_name
    try:
        registry.chat(model_name)
    except ModelNotFoundError:
        log.warning("sovereign-agent not served: chat model %r is not served", model_name)
        return None
    embedder = rag.embedder if rag is not None else None
    if embedder is None:
        try:
            embedder = registry.embedding(settings.embeddings.model_name)
        except ModelNotFoundError:
            embedder = None
    model = RegistryModel(registry, model_name)
    retriever = rag.retriever if rag is not None else None
    deps = AgentDeps(model=model, retriever=lambda: retriever, embedder=embedder, settings=settings.agents,
                     collection=collection or settings.rag.default_collection)
    return AgentBackend(deps, settings.data_dir)
