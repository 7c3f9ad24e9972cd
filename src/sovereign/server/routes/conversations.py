"""Conversations kept server-side, so history survives engine switches (``require_api_key``).

- ``POST /v1/conversations`` ``{"model": NAME}`` (default: the default route) -> ``{"id", "model"}``.
- ``GET /v1/conversations`` -> the caller's conversations, newest first (``limit`` 1..1000).
- ``GET /v1/conversations/{id}`` -> the conversation and its messages.
- ``DELETE /v1/conversations/{id}`` -> removes it and its messages.
- ``POST /v1/conversations/{id}/messages`` ``{"content", "max_tokens", "temperature", "seed"}``: append
  the user turn, generate with the full history (fitted to the engine that answers), store and
  return the assistant turn with ``deployment``.

Conversations belong to the caller's tenant: another tenant's conversation id is a 404 (exactly as
an unknown one), and a pipeline model answering a turn sees the caller's tenant (its documents).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from sovereign.backends.base import collect
from sovereign.conversations.store import MAX_LISTED
from sovereign.server.routes.admin import control_of
from sovereign.server.schemas import UnicodeChecked
from sovereign.server.state import get_state, require_api_key
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

router = APIRouter(dependencies=[Depends(require_api_key)])


class NewConversation(UnicodeChecked):
    model: str | None = Field(None, max_length=256)


class Turn(UnicodeChecked):
    content: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    seed: int | None = None


@router.post("/v1/conversations")
async def create_conversation(
    request: Request, body: NewConversation, tenant: str = Depends(require_api_key)
) -> dict[str, Any]:
    """A new conversation of the caller's tenant with ``model`` (404 for an unknown model)."""
    control = control_of(request)
    model = body.model or control.default_model
    get_state(request).registry.chat(model)  # 404 for unknown models
    conv = await (await control.conversations()).create(model, tenant=tenant)
    return {"id": conv.id, "model": conv.model, "created_at": conv.created_at}


@router.get("/v1/conversations")
async def list_conversations(
    request: Request, limit: int = Query(100, ge=1, le=MAX_LISTED), tenant: str = Depends(require_api_key)
) -> dict[str, Any]:
    """The caller's conversations, newest first (no messages)."""
    store = await control_of(request).conversations()
    rows = await store.recent(tenant=tenant, limit=limit)
    return {"object": "list", "data": [{"id": c.id, "model": c.model, "created_at": c.created_at} for c in rows]}


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(
    request: Request, conversation_id: str, tenant: str = Depends(require_api_key)
) -> dict[str, Any]:
    """The conversation and its messages; 404 when unknown or another tenant's."""
    store = await control_of(request).conversations()
    conv = await store.get(conversation_id, tenant=tenant)
    rows = await store.messages(conversation_id, tenant=tenant)
    return {
        "id": conv.id,
        "model": conv.model,
        "messages": [{"seq": m.seq, "role": m.role, "content": m.content, "deployment": m.deployment} for m in rows],
    }


@router.delete("/v1/conversations/{conversation_id}")
async def delete_conversation(
    request: Request, conversation_id: str, tenant: str = Depends(require_api_key)
) -> dict[str, Any]:
    """Delete the conversation and its messages; 404 when unknown or another tenant's."""
    await (await control_of(request).conversations()).delete(conversation_id, tenant=tenant)
    return {"id": conversation_id, "object": "conversation", "deleted": True}


@router.post("/v1/conversations/{conversation_id}/messages")
async def add_turn(
    request: Request, conversation_id: str, body: Turn, tenant: str = Depends(require_api_key)
) -> dict[str, Any]:
    """One user turn in, one assistant turn out, generated over the whole stored history."""
    control = control_of(request)
    store = await control.conversations()
    conv = await store.get(conversation_id, tenant=tenant)
    backend = get_state(request).registry.chat(conv.model)
    history = [m.to_chat() for m in await store.messages(conversation_id, tenant=tenant)]
    await store.append(conversation_id, "user", body.content, tenant=tenant)
    messages = (*history, ChatMessage(role="user", content=body.content))
    domain = GenerationRequest(
        model=conv.model,
        messages=messages,
        sampling=SamplingParams(max_tokens=body.max_tokens, temperature=body.temperature, seed=body.seed),
        buffered=True,  # the answer is returned whole: a router may restart it elsewhere on failure
        tenant=tenant,  # a pipeline model (sovereign-rag, sovereign-agent) reads the caller's documents
    )
    result = await collect(backend.stream(domain))
    route = result.metadata.get("route", {})
    deployment = route.get("deployment") or backend.name
    stored = await store.append(conversation_id, "assistant", result.text, deployment, tenant=tenant)
    return {
        "id": conv.id,
        "message": {"role": "assistant", "content": result.text, "seq": stored.seq},
        "deployment": deployment,
        "history_messages": len(messages),
        "route": route,
        "finish_reason": result.finish_reason,
        "usage": result.usage.to_dict(),
    }
