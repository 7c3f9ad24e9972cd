"""Synthesizer: the answer, streamed token by token, citing numbered sources like ``[2]``.

The prompt is: instructions + the numbered sources (system message), the last
``agents.history_turns`` question/answer pairs of the conversation, then the question. On the
validator's feedback round the feedback joins the instructions and the answer is written afresh:
a fresh prompt rather than "rewrite your previous answer", because small models (SmolLM2-135M)
echo a rejected draft and the feedback back into the revision. A direct-route answer has no
sources and no citation rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sovereign.agents.nodes.model_call import ModelReply, call_model
from sovereign.agents.state import AgentState, RunContext, Turn, past_turns
from sovereign.backends.base import ChatBackend
from sovereign.rag.citations import CitationAttributor
from sovereign.types import ChatMessage, SamplingParams

GROUNDED_INSTRUCTIONS = (
    "Answer the question using only the numbered sources below. After each sentence, cite the "
    "source it comes from by its number in square brackets, like [1]. If the sources do not contain "
    "the answer, say that you do not know."
)
DIRECT_INSTRUCTIONS = "You are a helpful, concise assistant."


def format_sources(sources: Sequence[dict[str, Any]]) -> str:
    """``[n] title - heading`` followed by the chunk text, one block per source."""
    blocks = []
    for source in sources:
        head = " - ".join(p for p in (source.get("title", ""), source.get("heading", "")) if p)
        blocks.append(f"[{source['n']}] {head}\n{source['text'].strip()}")
    return "\n\n".join(blocks)


def build_messages(
    question: str,
    sources: Sequence[dict[str, Any]] | None,
    history: Sequence[Turn],
    *,
    history_turns: int,
    previous: str = "",
    feedback: str = "",
) -> list[ChatMessage]:
    """The chat messages for one synthesis round (``sources`` None = direct answer; ``previous``,
    the rejected draft, is kept for callers but not shown to the model, see the module docstring)."""
    instructions = GROUNDED_INSTRUCTIONS if not feedback else f"{GROUNDED_INSTRUCTIONS} {feedback}"
    if sources is None:
        system = DIRECT_INSTRUCTIONS
    elif sources:
        system = f"{instructions}\n\nSources:\n\n{format_sources(sources)}"
    else:
        system = f"{instructions}\n\nSources: none were found."
    messages = [ChatMessage("system", system)]
    recent = list(history)[-2 * history_turns :] if history_turns else []
    messages += [ChatMessage("user" if t["role"] == "user" else "assistant", t["content"]) for t in recent]
    messages.append(ChatMessage("user", question))
    return messages


async def synthesize(
    question: str,
    sources: Sequence[dict[str, Any]] | None,
    history: Sequence[Turn],
    model: ChatBackend,
    sampling: SamplingParams,
    *,
    history_turns: int,
    on_token: Callable[[str], None] | None = None,
    previous: str = "",
    feedback: str = "",
) -> ModelReply:
    """Generate the answer, calling ``on_token`` with each piece as it streams.

    With sources, sentences the model leaves uncited are attributed as in ``sovereign-rag``
    (:class:`~sovereign.rag.citations.CitationAttributor`: held back to the end of the sentence,
    then `` [n]`` for the source holding most of its words); the reply's text is the cited text.

    Raises:
        whatever the model raises (ContextLengthExceededError, EngineError...).
    """
    messages = build_messages(
        question, sources, history, history_turns=history_turns, previous=previous, feedback=feedback
    )
    if not sources:
        return await call_model(model, messages, sampling, purpose="synthesize", on_token=on_token)
    attributor = CitationAttributor([s["text"] for s in sources])
    cited: list[str] = []

    def emit(text: str) -> None:
        if text:
            cited.append(text)
            if on_token is not None:
                on_token(text)

    reply = await call_model(model, messages, sampling, purpose="synthesize",
                             on_token=lambda piece: emit(attributor.feed(piece)))
    emit(attributor.flush())
    return replace(reply, text="".join(cited))


def answer_sampling(ctx: RunContext) -> SamplingParams:
    """The request's sampling with ``max_tokens`` defaulted to ``agents.max_tokens``."""
    if ctx.sampling.max_tokens is not None:
        return ctx.sampling
    return replace(ctx.sampling, max_tokens=ctx.deps.settings.max_tokens)


async def run(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """State adapter: sets ``answer``, ``attempts`` and this round's token counts."""
    attempt = state.get("attempts", 0) + 1
    direct = state.get("route", {}).get("route") == "direct"
    if attempt > 1:
        ctx.emit({"type": "revision", "attempt": attempt, "feedback": state.get("feedback", "")})
    reply = await synthesize(
        state["question"],
        None if direct else state.get("sources", []),
        past_turns(state),
        ctx.deps.model,
        answer_sampling(ctx),
        history_turns=ctx.deps.settings.history_turns,
        on_token=lambda text: ctx.emit({"type": "token", "text": text, "attempt": attempt}),
        previous=state.get("answer", "") if attempt > 1 else "",
        feedback=state.get("feedback", "") if attempt > 1 else "",
    )
    return {
        "answer": reply.text,
        "attempts": attempt,
        "finish_reason": reply.finish_reason,
        "_prompt_tokens": reply.usage.prompt_tokens,
        "_completion_tokens": reply.usage.completion_tokens,
    }
