"""Failure isolation and instrumentation around every node (no LangGraph here).

:func:`guarded` wraps a node adapter so that one call:

- emits ``node_start`` / ``node_end`` events (the CLI view and the stream use them);
- runs inside span ``agent.node.<name>`` and under ``agents.node_timeout_s`` (``asyncio.timeout``);
- records its latency in ``sovereign_agent_node_duration_seconds{node}`` and adds
  ``{"ms", "prompt_tokens", "completion_tokens", "embedding_tokens"}`` to ``state["nodes"][name]``
  (summed over repeated rounds), taken from the private keys ``_prompt_tokens``,
  ``_completion_tokens`` and ``_embedding_tokens`` a node adapter may return (chat-model tokens of
  its model calls; embedding-model tokens of its embed calls) and sets them on the node's span;
- turns any exception or timeout into ``{"failed": name, "degraded": True, "warnings": [...]}`` and
  counts ``sovereign_agent_degraded_total{node}``, so the graph routes to the simple path instead of
  raising. Cancellation (client disconnect) is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sovereign.agents.state import AgentState, RunContext
from sovereign.observability import metrics
from sovereign.observability.tracing import span


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Span attributes with dotted names (typed for ``span(**...)``)."""
    return values


log = logging.getLogger("sovereign.agents")
NodeFn = Callable[[AgentState, RunContext], Awaitable[dict[str, Any]]]
# record key -> the private update key a node adapter returns it under
TOKEN_KEYS = {"prompt_tokens": "_prompt_tokens", "completion_tokens": "_completion_tokens",
              "embedding_tokens": "_embedding_tokens"}


def guarded(name: str, fn: NodeFn, *, degrade: bool = True) -> NodeFn:
    """``fn`` with timeout, span, metrics, timings and (when ``degrade``) failure isolation.

    With ``degrade=False`` (the simple path itself) exceptions propagate after being recorded.
    """

    async def node(state: AgentState, ctx: RunContext) -> dict[str, Any]:
        ctx.emit({"type": "node_start", "node": name})
        began = time.perf_counter()
        error: str | None = None
        with span(f"agent.node.{name}", **_attrs({"agent.node": name})) as current:
            try:
                async with asyncio.timeout(ctx.deps.settings.node_timeout_s):
                    update = await fn(state, ctx)
            except TimeoutError as exc:
                error = f"timed out after {ctx.deps.settings.node_timeout_s:g} s"
                if not degrade:
                    raise _timeout(name, ctx) from exc
                update = {}
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                current.record_exception(exc)
                if not degrade:
                    raise
                update = {}
            if error is not None:
                log.warning("agent node %s failed: %s", name, error)
                current.set_attribute("agent.degraded", True)
                metrics.AGENT_DEGRADED.labels(node=name).inc()
                update = {"failed": name, "degraded": True,
                          "warnings": [f"{name} failed ({error}); degraded to the simple path"]}
            used = {key: int(update.pop(private, 0)) for key, private in TOKEN_KEYS.items()}
            for key, count in used.items():
                current.set_attribute(f"agent.{key}", count)
        elapsed = time.perf_counter() - began
        metrics.AGENT_NODE_DURATION.labels(node=name).observe(elapsed)
        before = (state.get("nodes") or {}).get(name, {})
        record: dict[str, Any] = {"ms": round(before.get("ms", 0.0) + elapsed * 1000, 3)}
        record.update({key: before.get(key, 0) + count for key, count in used.items()})
        if error is not None:
            record["error"] = error
        update["nodes"] = {name: record}
        ctx.emit({"type": "node_end", "node": name, "ms": record["ms"], "prompt_tokens": record["prompt_tokens"],
                  "completion_tokens": record["completion_tokens"], "error": error, "summary": _summary(name, update)})
        return update

    return node


def _timeout(name: str, ctx: RunContext) -> Exception:
    from sovereign.errors import EngineTimeoutError

    return EngineTimeoutError(f"The agent's {name} step took longer than agents.node_timeout_s "
                              f"({ctx.deps.settings.node_timeout_s:g} s).")


def _summary(name: str, update: dict[str, Any]) -> str:
    """A short human line for the CLI view (no document text)."""
    if "failed" in update:
        return "failed"
    if name == "router":
        route = update.get("route", {})
        return f"{route.get('route')} ({route.get('by')})"
    if name == "planner":
        return f"{len(update.get('subqueries', []))} sub-queries"
    if name in {"retrieval", "simple"}:
        return f"{len(update.get('sources', []))} sources"
    if name == "validator":
        verdict = update.get("verdict", {})
        return f"{verdict.get('status')} ({verdict.get('supported', 0)}/{verdict.get('checked', 0)} supported)"
    return ""
