"""``sovereign-agent``: the agent pipeline behind the ChatBackend Protocol.

``stream()`` runs the graph and turns its events into :class:`~sovereign.types.GenerationChunk`\\ s:
the synthesizer's tokens as they come, then one final chunk whose ``metadata`` is the documented
``sovereign`` response field (docs/agents.md)::

    {"sources": [{"n", "chunk_id", "doc_id", "path", "title", "heading", "score"}, ...],
     "grounded": bool, "validator": {...verdict...},
     "nodes": {"router": {"ms": 0.1, "prompt_tokens": 0, "completion_tokens": 0, "embedding_tokens": 0}, ...},
     "usage": {"prompt_tokens", "completion_tokens", "embedding_tokens"},
     "route": {"route", "reason", "by"}, "subqueries": [...],
     "warnings": [...], "degraded": bool, "conversation_id": "..."}

The response's ``usage`` (:func:`run_usage`) is the chat model's work for the whole run: prompt and
completion tokens summed over every model call (the router's, when the rules were unsure, and each
synthesizer or simple-path round). Embedding tokens (validator, rerank) are not chat tokens: they
are only in ``sovereign.usage.embedding_tokens`` and per node.

When the validator sends the answer back for its one feedback round, the revision streams after a
separator line (``REVISION_SEPARATOR``), so streamed and non-streamed text are the same.
If the graph itself breaks (a bug, the checkpointer's database), the request is answered on the
simple path outside the graph with a warning. Only a failure of the model itself, which no path
can work around, is raised (as the engine's own error: 502/503/504, never 500).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from sovereign.agents.graph import AgentGraph
from sovereign.agents.isolation import NodeFn, guarded
from sovereign.agents.nodes.simple import simple_answer
from sovereign.agents.state import (
    AgentDeps,
    RunContext,
    Turn,
    check_conversation_id,
    check_question,
    fresh_state,
)
from sovereign.backends.base import Capabilities
from sovereign.backends.router import PinnedModel
from sovereign.errors import EngineError, InvalidRequestError, SovereignError, UnsupportedParameterError
from sovereign.observability import metrics
from sovereign.observability.tracing import span
from sovereign.rag.models import TenantScoping, scoped
from sovereign.types import GenerationChunk, GenerationRequest, Usage


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Span attributes with dotted names (typed for ``span(**...)``)."""
    return values

log = logging.getLogger("sovereign.agents")
MODEL_NAME = "sovereign-agent"
REVISION_SEPARATOR = "\n\n---\nRevised after validation:\n"
SIMPLE_SEPARATOR = "\n\n---\nAnswer (simple path):\n"


def split_request(request: GenerationRequest) -> tuple[str, list[Turn]]:
    """``(question, earlier user/assistant turns)`` from a chat request: the question is the last
    user message; system and tool messages are not part of the conversation memory.

    Raises:
        InvalidRequestError: no user message, or an empty question.
        UnsupportedParameterError: a text-completion request (prompt) or json_mode.
    """
    if not request.is_chat:
        raise UnsupportedParameterError(f"{MODEL_NAME} answers chat requests only; use /v1/chat/completions.",
                                        param="model")
    if request.sampling.json_mode:
        raise UnsupportedParameterError(f"{MODEL_NAME} writes cited prose; response_format json is not supported.",
                                        param="response_format")
    users = [i for i, m in enumerate(request.messages) if m.role == "user"]
    if not users:
        raise InvalidRequestError("Send at least one user message: the last one is the question.", param="messages")
    last = users[-1]
    question = check_question(request.messages[last].content)
    history = [{"role": m.role, "content": m.content} for m in request.messages[:last]
               if m.role in ("user", "assistant") and m.content.strip()]
    return question, history


def run_usage(nodes: dict[str, Any]) -> tuple[Usage, int]:
    """``(chat usage, embedding tokens)`` of a run from its per-node records (``state["nodes"]``)."""
    records = nodes.values()
    usage = Usage(prompt_tokens=sum(int(n.get("prompt_tokens", 0)) for n in records),
                  completion_tokens=sum(int(n.get("completion_tokens", 0)) for n in records))
    return usage, sum(int(n.get("embedding_tokens", 0)) for n in records)


def response_metadata(state: dict[str, Any], conversation_id: str) -> dict[str, Any]:
    """The ``sovereign`` response field from a final state (see the module docstring)."""
    verdict = state.get("verdict") or {"status": "skipped"}
    sources = [{k: v for k, v in s.items() if k not in ("text", "tokens")} for s in state.get("sources", [])]
    nodes = state.get("nodes") or {}
    usage, embedding_tokens = run_usage(nodes)
    return {
        "sources": sources,
        "grounded": verdict.get("status") == "passed",
        "validator": verdict,
        "nodes": nodes,
        "usage": {**usage.to_dict(), "embedding_tokens": embedding_tokens},
        "route": state.get("route") or {},
        "subqueries": state.get("subqueries") or [],
        "warnings": state.get("warnings") or [],
        "degraded": bool(state.get("degraded")),
        "conversation_id": conversation_id,
    }


class AgentBackend:
    """The agent pipeline as a chat model. Implements :class:`~sovereign.backends.base.ChatBackend`.

    Args:
        deps: model, retriever provider, embedder and settings the nodes use.
        data_dir: where the SQLite checkpointer keeps ``agents.sqlite``.
        nodes: node adapters overriding the defaults by name (tests force failures with it).
        name: public model name.
    """

    def __init__(self, deps: AgentDeps, data_dir: Path, *, nodes: dict[str, NodeFn] | None = None,
                 name: str = MODEL_NAME) -> None:
        self.name = name
        self.deps = deps
        self.graph = AgentGraph(deps.settings, data_dir, nodes)

    @property
    def capabilities(self) -> Capabilities:
        inner = self.deps.model.capabilities
        return Capabilities(context_window=inner.context_window, json_mode=False, seed=inner.seed,
                            ignore_eos=False, completions=False, engine=f"agents over {self.deps.model.name}")

    @property
    def ready(self) -> bool:
        return self.deps.model.ready and self.graph.started

    async def start(self) -> None:
        """Start the model (idempotent) and open the checkpointer. Raises EngineUnavailableError / StorageError."""
        await self.deps.model.start()
        await self.graph.start()

    async def close(self) -> None:
        """Close the checkpointer; the model belongs to the registry and is closed there."""
        await self.graph.close()

    async def source_scope(self, metadata: dict[str, str] | None, tenant: str | None = None) -> tuple[str, int]:
        """:class:`~sovereign.backends.base.SourceScoped`: the collection the pipeline retrieves from
        (its configured one, else the request's ``metadata.collection``) and its index version:
        ``tenant``'s, or without a tenant one that changes whenever any tenant's collection of that
        name changes (as :meth:`sovereign.rag.answer.RagChatBackend.source_scope`).

        Raises:
            LookupError: no document memory, no collection, or the store cannot tell the version now.
        """
        retriever = self.deps.retriever()
        collection = self.deps.collection or (metadata or {}).get("collection")
        if retriever is None or not collection:
            raise LookupError("the agent pipeline has no document memory or collection to scope by")
        try:
            if tenant is None and isinstance(retriever, TenantScoping):
                return collection, await retriever.shared_version(collection)
            return collection, await scoped(retriever, tenant).index_version(collection)
        except SovereignError as exc:
            raise LookupError(f"index version of {collection!r} unavailable: {exc}") from exc

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self.deps.model.count_prompt_tokens(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        question, history = split_request(request)
        conversation_id = check_conversation_id(request.conversation_id) or uuid.uuid4().hex
        async for item in self.events(question, history, conversation_id, request):
            if isinstance(item, GenerationChunk):
                yield item

    async def events(
        self, question: str, history: list[Turn], conversation_id: str, request: GenerationRequest
    ) -> AsyncIterator[GenerationChunk | dict[str, Any]]:
        """Node events (dicts, for the CLI view) interleaved with the chunks :meth:`stream` yields."""
        deps = self.deps if request.deployment is None else replace(
            self.deps, model=PinnedModel(self.deps.model, request.deployment))  # an evaluation of one deployment
        ctx = RunContext(deps=deps, sampling=request.sampling, collection=self.deps.collection,
                         tenant=request.tenant)
        emitted = False
        usage = Usage()
        state: dict[str, Any] = {}
        with span("agent.run", **_attrs({"agent.model": self.name})):
            try:
                async for event in self.graph.run(question, history, conversation_id, ctx):
                    kind = event.get("type")
                    if kind == "token":
                        emitted = True
                        usage.completion_tokens += 1
                        yield GenerationChunk(text=event["text"], usage=Usage(0, usage.completion_tokens))
                    elif kind == "revision" and emitted:
                        sep = REVISION_SEPARATOR if event.get("attempt", 0) > 1 else SIMPLE_SEPARATOR
                        yield GenerationChunk(text=sep, usage=Usage(0, usage.completion_tokens))
                    elif kind == "final":
                        state = event["state"]
                    yield event
            except (EngineError, InvalidRequestError):
                raise  # the model failed on the simple path too: a real engine error, mapped at the edge
            except Exception as exc:
                log.exception("agent graph failed; answering on the simple path")
                metrics.AGENT_DEGRADED.labels(node="graph").inc()
                state = await self._simple_outside_graph(question, history, ctx, exc)
                if emitted:
                    yield GenerationChunk(text=SIMPLE_SEPARATOR, usage=Usage(0, usage.completion_tokens))
                yield GenerationChunk(text=state.get("answer", ""), usage=Usage(0, usage.completion_tokens))
        metadata = response_metadata(state, conversation_id)
        if self.graph.warning:
            metadata["warnings"] = [*metadata["warnings"], self.graph.warning]
        final_usage, _ = run_usage(metadata["nodes"])
        finish = state.get("finish_reason") or "stop"
        yield GenerationChunk(text="", usage=final_usage, finish_reason=finish, metadata=metadata)  # type: ignore[arg-type]

    async def _simple_outside_graph(
        self, question: str, history: list[Turn], ctx: RunContext, exc: Exception
    ) -> dict[str, Any]:
        ctx.emit = lambda _event: None
        state: dict[str, Any] = dict(fresh_state(question, history))
        state.update(failed="graph", degraded=True, warnings=[f"pipeline failed ({type(exc).__name__}); "
                                                              "answered on the simple path"], nodes={})
        update = await guarded("simple", simple_answer, degrade=False)(state, ctx)  # type: ignore[arg-type]
        state["warnings"] += update.pop("warnings", [])
        state["nodes"].update(update.pop("nodes", {}))
        state.update(update)
        return state
