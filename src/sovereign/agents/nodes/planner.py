"""Planner: split a compound question into at most N retrieval sub-queries, with no model call.

The first sub-query is always the whole question (rewritten with the previous question when it is
a follow-up such as "and what does it return?"), so retrieval is never worse than the simple chain's
single query; the others are the parts of a compound question: several questions in one message,
"X and how/what/why ...", "difference between X and Y", "X vs Y", "compare X and Y".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sovereign.agents.state import AgentState, RunContext, Turn, past_turns

_SENTENCE_QUESTIONS = re.compile(r"(?<=\?)\s+|;\s*")
_AND_CLAUSE = re.compile(
    r",?\s+(?:and|also|plus)\s+(?=(?:how|what|why|when|where|which|who|can|does|do|is|are|should)\b)", re.I
)
_PAIR = [
    re.compile(r"\bdifference(?:s)? between (?P<a>.+?) and (?P<b>.+?)[?.!]*$", re.I),
    re.compile(r"\bcompare (?P<a>.+?) (?:and|with|to) (?P<b>.+?)[?.!]*$", re.I),
    re.compile(r"^(?:\W*)(?P<a>.+?)\s+(?:vs\.?|versus)\s+(?P<b>.+?)[?.!]*$", re.I),
]
_FOLLOW_UP = re.compile(r"\b(it|its|it's|this|that|these|those|they|them|their|the same|above|previous)\b", re.I)


def contextualize(question: str, history: Sequence[Turn]) -> str:
    """The question made self-contained for retrieval: a follow-up (pronoun reference or fewer than
    five words) is prefixed with the previous user question; otherwise unchanged."""
    previous = next((t["content"] for t in reversed(history) if t.get("role") == "user"), None)
    if previous is None:
        return question
    if _FOLLOW_UP.search(question) or len(question.split()) < 5:
        return f"{previous.strip()} {question}"
    return question


def split_question(question: str) -> list[str]:
    """The parts of a compound question (empty when it is not compound)."""
    parts: list[str] = []
    for pattern in _PAIR:
        match = pattern.search(question)
        if match:
            parts += [match.group("a"), match.group("b")]
            break
    if not parts:
        for sentence in _SENTENCE_QUESTIONS.split(question):
            parts += _AND_CLAUSE.split(sentence)
    cleaned = [p.strip(" ,;") for p in parts]
    cleaned = [p for p in cleaned if len(p) >= 3]
    return cleaned if len(cleaned) > 1 else []


def plan(question: str, history: Sequence[Turn], max_subqueries: int) -> list[str]:
    """At most ``max_subqueries`` distinct sub-queries, the whole (contextualized) question first."""
    full = contextualize(question, history)
    queries = [full, *split_question(question)]
    seen: set[str] = set()
    out: list[str] = []
    for query in queries:
        key = query.lower()
        if key not in seen:
            seen.add(key)
            out.append(query)
    return out[:max_subqueries]


async def run(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """State adapter: sets ``subqueries``."""
    return {"subqueries": plan(state["question"], past_turns(state), ctx.deps.settings.max_subqueries)}
