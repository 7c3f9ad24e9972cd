"""The agent pipeline's state, its per-run context and the small value types the nodes exchange.

Everything in :class:`AgentState` is plain JSON (str, int, float, bool, list, dict) so any
checkpointer (SQLite, PostgreSQL, memory) stores it without custom serialisers. Per-run objects
that must not be persisted (the model, the retriever, the token callback, sampling) travel in
:class:`RunContext`, which LangGraph hands to nodes as the run's static context.

One run's state, in the order the nodes fill it::

    question, history            <- input (history: earlier turns of the conversation)
    route                        <- router     {"route": "direct"|"retrieve", "reason", "by": "rules"|"model"|"default"}
    subqueries                   <- planner    ["...", ...] (1..max_subqueries)
    sources                      <- retrieval  [SearchHit.source() + {"text", "n"}] numbered from 1
    answer, finish_reason        <- synthesizer
    verdict, feedback, attempts  <- validator  (attempts counts synthesizer rounds: 1 or 2)
    failed, warnings, nodes      <- any node   (failure isolation, per-node timings)
    turns                        <- finish     (conversation memory, kept across runs by the checkpointer)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from sovereign.backends.base import ChatBackend, EmbeddingBackend
from sovereign.backends.context_fit import estimate_tokens
from sovereign.config import AgentSettings
from sovereign.errors import InvalidRequestError
from sovereign.rag.models import ANONYMOUS, Retriever, scoped
from sovereign.types import SamplingParams

NODE_NAMES = ("router", "planner", "retrieval", "synthesizer", "validator")
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

# A turn as stored: {"role": "user"|"assistant", "content": str}
Turn = dict[str, str]
Emit = Callable[[dict[str, Any]], None]


MAX_STORED_PAIRS = 50  # the ``history_turns`` maximum; prompts use the last ``history_turns`` pairs


def _add_recent_turns(old: list[Turn] | None, new: list[Turn] | None) -> list[Turn]:
    """Reducer for ``turns``: append the new turns, keep the last ``MAX_STORED_PAIRS`` pairs."""
    return (list(old or []) + list(new or []))[-2 * MAX_STORED_PAIRS :]


def _merge_dicts(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    """Reducer for per-node records: later writes add keys; ``None`` (new run) resets."""
    if new is None:
        return {}
    return {**(old or {}), **new}


def _append(old: list[str] | None, new: list[str] | None) -> list[str]:
    """Reducer for warnings: append; ``None`` (new run) resets."""
    if new is None:
        return []
    return list(old or []) + list(new)


class AgentState(TypedDict, total=False):
    """The graph state (see the module docstring for who writes what)."""

    question: str
    history: list[Turn]
    route: dict[str, Any]
    subqueries: list[str]
    sources: list[dict[str, Any]]
    answer: str
    finish_reason: str
    verdict: dict[str, Any]
    feedback: str
    attempts: int
    failed: str
    degraded: bool
    warnings: Annotated[list[str], _append]
    nodes: Annotated[dict[str, Any], _merge_dicts]
    turns: Annotated[list[Turn], _add_recent_turns]


def fresh_state(question: str, history: Sequence[Turn] = ()) -> AgentState:
    """The input of one run: resets every per-run field (the checkpointer keeps only ``turns``)."""
    return AgentState(
        question=question, history=list(history), route={}, subqueries=[], sources=[], answer="",
        finish_reason="stop", verdict={}, feedback="", attempts=0, failed="", degraded=False,
        warnings=None, nodes=None,  # type: ignore[typeddict-item]  # None = reset (see reducers)
    )


def past_turns(state: AgentState) -> list[Turn]:
    """The conversation so far: the request's own earlier messages when it sent any, otherwise the
    turns the checkpointer kept for this conversation id."""
    return list(state.get("history") or state.get("turns") or [])


def check_question(question: str) -> str:
    """The stripped question.

    Raises:
        InvalidRequestError: the question is empty or whitespace.
    """
    text = question.strip()
    if not text:
        raise InvalidRequestError("The question is empty: send a non-empty last user message.", param="messages")
    return text


def check_conversation_id(conversation_id: str | None) -> str | None:
    """``conversation_id`` when it is 1-128 chars of ``[A-Za-z0-9._:-]`` starting alphanumeric.

    Raises:
        InvalidRequestError: any other format (400, param ``conversation_id``).
    """
    if conversation_id is None:
        return None
    if not CONVERSATION_ID.match(conversation_id):
        raise InvalidRequestError(
            "conversation_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit.",
            param="conversation_id",
        )
    return conversation_id


def thread_id(conversation_id: str, tenant: str | None) -> str:
    """The checkpointer thread of ``tenant``'s conversation ``conversation_id``.

    The anonymous tenant (and a caller without one, the CLI) keeps the bare conversation id, the
    thread of the release before tenants; any other tenant's thread is ``<tenant>/<conversation id>``.
    A conversation id holds no ``/`` (:func:`check_conversation_id`), so no id of one tenant can
    name another tenant's thread, and a tenant cannot resume a thread it did not write.
    """
    if tenant is None or tenant == ANONYMOUS:
        return conversation_id
    return f"{tenant}/{conversation_id}"


class RouteDecision(BaseModel):
    """The router's structured output (what the model must return as JSON when asked)."""

    model_config = ConfigDict(extra="ignore")

    route: Literal["direct", "retrieve"]
    reason: str = Field("", max_length=200)


@dataclass(slots=True)
class AgentDeps:
    """What the nodes call, shared by every run of one pipeline.

    Args:
        model: the chat backend that routes (when unsure) and writes answers.
        retriever: returns the document retriever, or None when document memory is not installed
            (resolved per run, so a store plugged in later is picked up).
        embedder: the embedding engine the validator (and optional rerank) uses; None = no validation.
        settings: the ``agents`` settings section.
        count_tokens: tokens of a text under the chat model's tokenizer (context packing);
            default: :func:`~sovereign.backends.context_fit.estimate_tokens` (over-counts prose and code).
    """

    model: ChatBackend
    retriever: Callable[[], Retriever | None]
    embedder: EmbeddingBackend | None
    settings: AgentSettings
    count_tokens: Callable[[str], int] = field(default=estimate_tokens)
    collection: str | None = None


@dataclass(slots=True)
class RunContext:
    """Per-run, never persisted: dependencies, sampling for the answer, the event callback and the
    caller's tenant.

    ``emit`` receives ``{"type": "node_start"|"node_end"|"token"|"warning"|"reset", ...}`` events;
    the backend turns tokens into stream chunks and the CLI view draws the nodes from them.
    ``tenant`` (the request's; None for an in-process caller such as the CLI) scopes retrieval to
    its documents (:meth:`retriever`) and names the checkpointer thread (:func:`thread_id`).
    """

    deps: AgentDeps
    sampling: SamplingParams
    emit: Emit = field(default=lambda _event: None)
    collection: str | None = None
    tenant: str | None = None

    def retriever(self) -> Retriever | None:
        """The deps' retriever restricted to :attr:`tenant` (None without document memory).

        Raises:
            PermissionDeniedError: the retriever cannot be scoped to a tenant other than anonymous.
        """
        found = self.deps.retriever()
        return None if found is None else scoped(found, self.tenant)
