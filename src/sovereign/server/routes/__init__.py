"""The gateway's HTTP routes, one module per API area, mounted in this order by the app factory."""

from __future__ import annotations

from sovereign.server.routes import (
    admin,
    cache_admin,
    conversations,
    documents,
    drift,
    embeddings,
    flags,
    generation,
    health,
    messages,
    models,
    rerank,
    responses,
    system,
    tokenizer,
)

ROUTERS = (
    admin.router, cache_admin.router, conversations.router, documents.router, drift.router, embeddings.router,
    flags.router, generation.router, health.router, messages.router, models.router, rerank.router, responses.router,
    system.router, tokenizer.router,
)
