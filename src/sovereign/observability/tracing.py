"""OpenTelemetry tracing: the one helper every room uses to open spans.

Without a configured SDK the OpenTelemetry API is a no-op, so ``span`` costs almost nothing when
tracing is off (the default). ``observability.otlp_endpoint`` turns export on (see
:func:`configure_tracing`). Prompt and completion text never go into attributes unless
``observability.capture_content`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

_tracer = trace.get_tracer("sovereign")


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """Open a span named ``name`` (e.g. ``cache.lookup``) with attributes whose values are not None."""
    with _tracer.start_as_current_span(name) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)
        yield current
