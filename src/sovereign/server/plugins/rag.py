"""Document memory in the gateway: opens the store, exposes ``state.services["rag"]``, adds ``sovereign-rag``.

``state.services["rag"]`` is a :class:`~sovereign.rag.service.RagService` (``.retriever`` implements
:class:`~sovereign.rag.models.Retriever`; ``.on_change`` takes ``(doc_ids, collection)`` callbacks).
The embedding model is the registry's (``embeddings.model_name``) when registered, so the server
holds one copy of MiniLM. ``sovereign-rag`` is registered only when the engine model exists.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sovereign.errors import ModelNotFoundError
from sovereign.rag.answer import RagChatBackend
from sovereign.rag.service import RagService
from sovereign.server.state import AppState

log = logging.getLogger("sovereign.rag")


async def install(state: AppState) -> Callable[[], Awaitable[None]] | None:
    settings = state.settings
    try:
        embedder = state.registry.embedding(settings.embeddings.model_name)
    except ModelNotFoundError:
        embedder = None
    service = await RagService.open(settings, embedder=embedder)
    state.services["rag"] = service
    registry = state.registry
    model_name = settings.engine.model_name
    try:
        registry.chat(model_name)
    except ModelNotFoundError:
        log.warning("sovereign-rag not registered: chat model %r is not served", model_name)
    else:
        registry.add_chat(RagChatBackend(lambda: registry.chat(model_name), service.retriever,
                                         collection=settings.rag.default_collection, top_k=settings.rag.top_k,
                                         answer_tokens=settings.rag.answer_max_tokens))

    async def close() -> None:
        state.services.pop("rag", None)
        await service.close()

    return close
