"""Router: answer directly, or retrieve from the documents first?

Cheap rules decide most questions in microseconds; only when no rule fires is the model asked,
in JSON mode, for a :class:`~sovereign.agents.state.RouteDecision`. Anything the model returns that
does not validate (garbage, wrong keys, an unknown route) falls back to ``retrieve``: the safe
default, since a retrieved answer is validated against its sources and a direct one is not.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from sovereign.agents.nodes.model_call import call_model
from sovereign.agents.state import AgentState, RouteDecision, RunContext
from sovereign.backends.base import ChatBackend
from sovereign.observability.drift import RECORDER as DRIFT
from sovereign.types import ChatMessage, SamplingParams, Usage

_DIRECT = [
    re.compile(r"^\W*(hi|hello|hey|yo|thanks|thank you|thx|good (morning|afternoon|evening)|bye)\b[\W\w]{0,20}$", re.I),
    re.compile(r"^\W*(what is|what's|compute|calculate)?\s*[-+*/().\d\s^%=]+\??$", re.I),
    re.compile(r"^\W*(write|compose|tell)( me)? (a|an|some) (poem|joke|story|haiku|limerick|song)\b", re.I),
    re.compile(r"^\W*(translate|rephrase|paraphrase|summari[sz]e|proofread)\b.{0,40}(following|this|text)\b", re.I),
    re.compile(r"^\W*(who are you|what can you do|how are you)\W*$", re.I),
]
_RETRIEVE = [
    re.compile(
        r"\b(python|module|function|method|class|library|package|api|docs?|documentation|manual|syntax|"
        r"error|exception|argument|parameter|keyword|attribute|decorator|type|operator|statement|"
        r"according to|in the (docs|documents|sources))\b",
        re.I,
    ),
    re.compile(r"\b[A-Za-z_]\w*\.[A-Za-z_]\w*\b|\w+\(\)|`[^`]+`"),  # code identifiers: os.path, len(), `x`
    re.compile(r"^\W*(how (do|does|can|to|should)|what (is|are|does|do)|why|when|where|which|explain|describe|"
               r"list|show|difference|compare)\b", re.I),
]
_ROUTE_PROMPT = (
    "Decide whether this question needs the document collection (technical documentation) or can be "
    'answered directly. Reply with JSON only: {"route": "retrieve" or "direct", "reason": "<few words>"}.'
)


def rule_route(question: str) -> RouteDecision | None:
    """A decision from the rules alone, or None when they are unsure. Pure, ~10 µs."""
    for pattern in _DIRECT:
        if pattern.search(question):
            return RouteDecision(route="direct", reason=f"rule: {pattern.pattern[:40]}")
    for pattern in _RETRIEVE:
        if pattern.search(question):
            return RouteDecision(route="retrieve", reason="rule: documentation question")
    return None


def parse_route(raw: str) -> RouteDecision | None:
    """The model's JSON reply as a RouteDecision, or None when it is not valid (garbage)."""
    match = re.search(r"\{.*\}", raw, re.S)
    if match is None:
        return None
    try:
        return RouteDecision.model_validate_json(match.group(0))
    except ValidationError:
        return None


async def route(question: str, model: ChatBackend | None) -> tuple[dict[str, Any], Usage]:
    """Decide the route. Returns ``(route record, the model call's usage)``.

    The record is ``{"route": "direct"|"retrieve", "reason": str, "by": "rules"|"model"|"default"}``;
    the usage is ``Usage()`` (0 and 0) when the rules decided, else the call's prompt and completion tokens.

    Raises:
        whatever the model raises (the isolation wrapper turns it into a degrade).
    """
    decision = rule_route(question)
    if decision is not None:
        return {**decision.model_dump(), "by": "rules"}, Usage()
    if model is None:
        return {"route": "retrieve", "reason": "no router model", "by": "default"}, Usage()
    reply = await call_model(
        model,
        [ChatMessage("system", _ROUTE_PROMPT), ChatMessage("user", question)],
        SamplingParams(max_tokens=48, temperature=0.0, json_mode=True),
        purpose="route",
    )
    parsed = parse_route(reply.text)
    if parsed is None:
        return {"route": "retrieve", "reason": "model reply did not validate", "by": "default"}, reply.usage
    return {**parsed.model_dump(), "by": "model"}, reply.usage


async def run(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """State adapter: sets ``route`` and the routing call's token counts (see isolation.TOKEN_KEYS)."""
    record, usage = await route(state["question"], ctx.deps.model)
    DRIFT.record_category("route", record["route"])
    return {"route": record, "_prompt_tokens": usage.prompt_tokens, "_completion_tokens": usage.completion_tokens}
