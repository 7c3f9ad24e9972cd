"""Per-response latency and token metrics: TTFT, inter-token latency (ITL), decode rate, token counters;
and the drift signals of a finished generation (model, finish reason, prompt tokens)."""

from __future__ import annotations

import time
from typing import Any

from sovereign.observability import metrics
from sovereign.observability.drift import RECORDER as DRIFT
from sovereign.types import GenerationChunk, Usage


class TokenClock:
    """Records TTFT (from request receipt), ITL and token counters for one response of ``model``.

    Args:
        model: the resolved model name (metric label).
        scope_state: the ASGI scope's ``state`` dict; ``t0`` (perf_counter seconds at receipt) is
            read from it, and ``ttft_s``, ``prompt_tokens``, ``completion_tokens`` written for the
            access log and the server span.
    """

    def __init__(self, model: str, scope_state: dict[str, Any]) -> None:
        self.model = model
        self.scope_state = scope_state
        self.t0: float = scope_state.get("t0", time.perf_counter())
        self.first: float | None = None
        self.last: float | None = None
        self.finish_reason: str | None = None

    def tick(self, chunk: GenerationChunk) -> None:
        """Account one streamed chunk (chunks without text do not count as tokens; the last one's
        ``finish_reason`` is kept for drift)."""
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if not chunk.text:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            self.scope_state["ttft_s"] = now - self.t0
            metrics.TIME_TO_FIRST_TOKEN.labels(model=self.model).observe(now - self.t0)
        elif self.last is not None:
            metrics.INTER_TOKEN_LATENCY.labels(model=self.model).observe(now - self.last)
        self.last = now

    def finish(self, usage: Usage) -> None:
        """Record the final usage; the decode rate is (completion tokens - 1) / (last - first token) s."""
        self.scope_state.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        metrics.PROMPT_TOKENS.labels(model=self.model).inc(usage.prompt_tokens)
        metrics.COMPLETION_TOKENS.labels(model=self.model).inc(usage.completion_tokens)
        DRIFT.record_category("model", self.model)
        DRIFT.record_category("finish_reason", self.finish_reason)
        DRIFT.record_number("prompt_tokens", usage.prompt_tokens)
        if self.first is not None and self.last is not None and self.last > self.first:
            decode_rate = max(usage.completion_tokens - 1, 0) / (self.last - self.first)
            metrics.OUTPUT_TOKENS_PER_SECOND.labels(model=self.model).observe(decode_rate)
