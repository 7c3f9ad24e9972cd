"""Drift bookkeeping on the request path: append one small tuple to a bounded deque, nothing else.

Call sites (one line each) feed the process-global :data:`RECORDER`:

=========================  ==================================  ============================================
signal                     kind                                recorded in
=========================  ==================================  ============================================
``model``                  categorical (public model name)     ``TokenClock.finish``
``finish_reason``          categorical (stop, length, ...)     ``TokenClock.finish``
``prompt_tokens``          numeric (tokens)                    ``TokenClock.finish``
``language``               categorical (ISO 639-1, derived)    ``observe_prompt`` in the request flow
``collection``             categorical (top hit's collection)  ``HybridRetriever.search``
``retrieval_score``        numeric (top vector cosine)         ``HybridRetriever.search``
``query_projection_{0,1}`` numeric (derived)                   ``observe_query_vector`` in ``search``
``route``                  categorical (direct, retrieve)      the agents' router node
=========================  ==================================  ============================================

Each call costs one attribute test when drift is off, and one ``deque.append`` of a tuple
``(kind, signal, value, unix seconds)`` when on: no lock (``deque.append`` and ``popleft`` are
thread-safe in CPython), no I/O, no numpy. The deque has ``maxlen`` = ``drift.max_buffer``: when
the background flush (:mod:`sovereign.observability.drift_monitor`) falls behind, the oldest
observations are dropped and counted in :attr:`DriftRecorder.dropped`. Language detection and the
projections of query vectors happen in that flush, off the request path.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final, Protocol

from sovereign.types import GenerationRequest

CATEGORY: Final = 0
NUMBER: Final = 1
PROMPT: Final = 2  # value: the last user message (truncated); the flush derives ``language``
VECTOR: Final = 3  # value: the query embedding (float32 [dims]); the flush derives ``query_projection_{0,1}``

CATEGORICAL_SIGNALS: Final = ("model", "finish_reason", "language", "collection", "route")
NUMERIC_SIGNALS: Final = ("prompt_tokens", "retrieval_score", "query_projection_0", "query_projection_1")
PROMPT_CHARS: Final = 300
"""Characters of the last user message kept for language detection (plenty for a language id)."""

Observation = tuple[int, str, Any, float]
"""``(kind, signal, value, unix seconds)``; kind is :data:`CATEGORY`, :data:`NUMBER`, :data:`PROMPT`
or :data:`VECTOR`."""


class Vector(Protocol):
    """A query embedding: anything with a length, indexable (a numpy float32 array in practice)."""

    def __len__(self) -> int: ...


class DriftRecorder:
    """Buffers observations of live traffic for the drift monitor.

    Args:
        max_buffer: the deque's ``maxlen`` (observations kept between two flushes).

    Off (the default) until :meth:`enable`; every ``record_*``/``observe_*`` is then a no-op.
    """

    def __init__(self, max_buffer: int = 20_000) -> None:
        self.enabled = False
        self.buffer: deque[Observation] = deque(maxlen=max_buffer)
        self.dropped = 0

    def enable(self, max_buffer: int) -> None:
        """Start recording into a fresh deque of ``max_buffer`` observations."""
        self.buffer = deque(maxlen=max_buffer)
        self.dropped = 0
        self.enabled = True

    def disable(self) -> None:
        """Stop recording and forget what is buffered."""
        self.enabled = False
        self.buffer = deque(maxlen=self.buffer.maxlen)

    def _append(self, item: Observation) -> None:
        buffer = self.buffer
        if len(buffer) == buffer.maxlen:
            self.dropped += 1  # approximate under threads; a gauge of lost observations, not a ledger
        buffer.append(item)

    def record_category(self, signal: str, value: str | None) -> None:
        """One categorical observation (``None`` is recorded as ``"none"``)."""
        if self.enabled:
            self._append((CATEGORY, signal, "none" if value is None else value, time.time()))

    def record_number(self, signal: str, value: float) -> None:
        """One numeric observation."""
        if self.enabled:
            self._append((NUMBER, signal, value, time.time()))

    def observe_prompt(self, request: GenerationRequest) -> None:
        """The last user message (or the raw prompt), first :data:`PROMPT_CHARS` characters; its
        language is detected in the flush."""
        if not self.enabled:
            return
        text = request.prompt
        if text is None:
            text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if text:
            self._append((PROMPT, "language", text[:PROMPT_CHARS], time.time()))

    def observe_query_vector(self, vector: Vector) -> None:
        """A query embedding, kept by reference; projected onto two fixed directions in the flush."""
        if self.enabled and len(vector):
            self._append((VECTOR, "query_projection", vector, time.time()))

    def drain(self) -> list[Observation]:
        """Everything buffered, oldest first, removed from the buffer (safe against concurrent appends)."""
        buffer = self.buffer
        out: list[Observation] = []
        pop = buffer.popleft
        for _ in range(len(buffer)):
            out.append(pop())
        return out


RECORDER: Final = DriftRecorder()
"""The process-global recorder every call site uses; enabled by the ``drift`` start-up stage."""
