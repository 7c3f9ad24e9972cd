"""The simple path: one query, one retrieval, one answer, no validation.

It is where every failure degrades to (router, planner, retrieval or synthesizer failing or timing
out) and it is itself degradable: if retrieval fails here too, the answer is written without
sources (with a warning); only a model failure here is raised, because then nothing can answer.
"""

from __future__ import annotations

from typing import Any

from sovereign.agents.nodes import retrieval, synthesizer
from sovereign.agents.state import AgentState, RunContext, past_turns
from sovereign.observability.tracing import span


async def simple_answer(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """Answer ``state["question"]`` on the simple path; returns the state update.

    Keeps sources already retrieved by the agent path when the failure came after retrieval.

    Raises:
        whatever the model raises (a real engine failure: the caller reports it as an HTTP error).
    """
    deps = ctx.deps
    warnings: list[str] = []
    sources = state.get("sources") or []
    failed = state.get("failed", "")
    if not sources:
        history_tokens = sum(deps.count_tokens(t["content"]) for t in past_turns(state))
        try:
            with span("agent.simple.retrieve"):
                sources, more = await retrieval.retrieve(
                    [state["question"]], ctx.retriever(), top_k=deps.settings.top_k,
                    budget_tokens=retrieval.context_budget(ctx, history_tokens),
                    count_tokens=deps.count_tokens, collection=ctx.collection,
                )
            warnings += more
        except Exception as exc:
            warnings.append(f"simple path: retrieval failed ({type(exc).__name__}: {exc}); answered without sources")
            sources = []
    ctx.emit({"type": "revision", "attempt": 0, "feedback": "simple path"})
    reply = await synthesizer.synthesize(
        state["question"], sources, past_turns(state), deps.model, synthesizer.answer_sampling(ctx),
        history_turns=deps.settings.history_turns,
        on_token=lambda text: ctx.emit({"type": "token", "text": text, "attempt": 0}),
    )
    return {
        "sources": sources,
        "answer": reply.text,
        "finish_reason": reply.finish_reason,
        "verdict": {"status": "skipped", "reason": f"simple path after {failed or 'a'} failure"},
        "warnings": warnings,
        "_prompt_tokens": reply.usage.prompt_tokens,
        "_completion_tokens": reply.usage.completion_tokens,
    }


def finish(state: AgentState) -> dict[str, Any]:
    """The conversation turns this run adds (kept by the checkpointer for follow-ups)."""
    return {"turns": [{"role": "user", "content": state["question"]},
                      {"role": "assistant", "content": state.get("answer", "")}]}
