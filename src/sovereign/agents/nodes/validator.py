"""Validator: every citation must exist and every sentence must be supported by its sources.

Support is cosine similarity between the sentence and a source chunk under the embedding model
(all-MiniLM-L6-v2 by default), one embed call per check: a sentence citing ``[n]`` is supported
when ``max(cos(sentence, source n) for each cited n) >= agents.support_threshold``; a sentence
without citations is checked against every source (an implicit citation), so an answer cannot pass
by citing nothing. Sentences of fewer than four words ("Yes.", "In short:") are not checked.
See docs/agents.md for how the default threshold (0.45) was chosen.

The verdict (``sovereign.validator`` in responses)::

    {"status": "passed"|"failed", "threshold": 0.45, "checked": 3, "supported": 2,
     "invalid_citations": [7], "sentences": [{"text": "...", "cited": [1], "score": 0.62, "supported": true}, ...]}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sovereign.agents.state import AgentState, RunContext
from sovereign.backends.base import EmbeddingBackend
from sovereign.observability.tracing import span
from sovereign.rag.citations import CITATION


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Span attributes with dotted names (typed for ``span(**...)``)."""
    return values


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=\d\])\s+(?=[A-Z])|\n+")
MIN_WORDS = 4


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after . ! ? followed by space, and at line breaks), non-empty.
    A citation following the full stop (``... here. [2]``) stays with its sentence."""
    text = re.sub(r"([.!?])\s+(\[\d+(?:\s*,\s*\d+)*\])", r"\1\2", text)
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def citations(sentence: str) -> list[int]:
    """Source numbers cited in ``sentence``, in order, without repeats."""
    found: list[int] = []
    for group in CITATION.findall(sentence):
        for number in group.split(","):
            if int(number) not in found:
                found.append(int(number))
    return found


def feedback_for(verdict: dict[str, Any], count: int) -> str:
    """The synthesizer's feedback: one instruction, then what to fix (short: small models echo
    long feedback back into the answer)."""
    fixes: list[str] = []
    if verdict["invalid_citations"]:
        cited = ", ".join(f"[{n}]" for n in verdict["invalid_citations"])
        fixes.append(f"only cite sources [1] to [{count}], not {cited}")
    unsupported = [s["text"][:120] for s in verdict["sentences"] if not s["supported"]]
    if unsupported:
        fixes.append("do not write: " + " / ".join(f'"{t}"' for t in unsupported[:3]))
    if verdict["checked"] == 0:
        fixes.append("answer in full sentences taken from the sources")
    return "Important: use only facts stated in the sources; " + "; ".join(fixes) + "."


async def validate(
    answer: str, sources: Sequence[dict[str, Any]], embedder: EmbeddingBackend, threshold: float
) -> tuple[dict[str, Any], int]:
    """Check ``answer`` against ``sources``. Returns ``(verdict, embedding tokens used)``.

    Raises:
        whatever ``embedder.embed`` raises.
    """
    numbers = {int(s["n"]): i for i, s in enumerate(sources)}
    sentences = split_sentences(answer)
    invalid = sorted({n for s in sentences for n in citations(s) if n not in numbers})
    checked = [s for s in sentences if len(CITATION.sub("", s).split()) >= MIN_WORDS]
    rows: list[dict[str, Any]] = []
    tokens = 0
    if checked and sources:
        texts = [CITATION.sub("", s).strip() for s in checked] + [s["text"] for s in sources]
        with span("agent.embed", **_attrs({"agent.purpose": "validate", "agent.texts": len(texts)})) as current:
            vectors, tokens = await embedder.embed(texts)
            current.set_attribute("agent.embedding_tokens", tokens)
        sims = vectors[: len(checked)] @ vectors[len(checked) :].T  # [sentences, sources] cosine
        for row, sentence in enumerate(checked):
            cited = [n for n in citations(sentence) if n in numbers]
            columns = [numbers[n] for n in cited] if cited else list(range(len(sources)))
            best = max(columns, key=lambda c: float(sims[row, c]))
            score = float(sims[row, best])
            rows.append({"text": sentence, "cited": cited, "implicit": not cited,
                         "best_source": int(sources[best]["n"]), "score": round(score, 4),
                         "supported": score >= threshold})
    else:
        rows = [{"text": s, "cited": citations(s), "implicit": True, "best_source": None, "score": 0.0,
                 "supported": False} for s in checked]
    supported = sum(r["supported"] for r in rows)
    passed = bool(rows) and not invalid and supported == len(rows)
    verdict = {"status": "passed" if passed else "failed", "threshold": threshold, "checked": len(rows),
               "supported": supported, "invalid_citations": invalid, "sentences": rows}
    return verdict, tokens


async def run(state: AgentState, ctx: RunContext) -> dict[str, Any]:
    """State adapter: sets ``verdict``, ``feedback`` when it failed (for one more round), and the
    embedding tokens the check used."""
    if ctx.deps.embedder is None:
        return {"verdict": {"status": "skipped", "reason": "no embedding model"}}
    sources = state.get("sources", [])
    threshold = ctx.deps.settings.support_threshold
    verdict, tokens = await validate(state.get("answer", ""), sources, ctx.deps.embedder, threshold)
    verdict["rounds"] = state.get("attempts", 1)
    update: dict[str, Any] = {"verdict": verdict, "_embedding_tokens": tokens}
    if verdict["status"] == "failed":
        update["feedback"] = feedback_for(verdict, len(sources))
    return update
