"""OpenTelemetry tracing: the helpers every room uses to open spans, and the OTLP/HTTP exporter.

Without :func:`configure_tracing` the spans go to the OpenTelemetry API's global provider, a no-op
unless someone installed an SDK, so :func:`span` costs almost nothing when tracing is off (the
default). ``observability.otlp_endpoint`` turns export on: spans are batched and sent with the
OTLP/HTTP protobuf exporter, which an OpenTelemetry Collector and Langfuse
(``/api/public/otel/v1/traces``) both accept.

Span names and attributes follow the OpenTelemetry semantic conventions (HTTP server spans,
GenAI ``{operation} {model}`` spans with ``gen_ai.*`` attributes). Prompt and completion text
never go into spans unless ``observability.capture_content`` is set; :func:`capture_content`
tells instrumented code whether it may.

Inside async generators use :func:`detached_span`: it records a child of the current span without
making itself current, so resuming the generator in another task never detaches a foreign context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from sovereign import __version__
from sovereign.config import resolve_secret
from sovereign.extras import require

if TYPE_CHECKING:
    from sovereign.config import ObservabilitySettings

_API_TRACER = trace.get_tracer("sovereign", __version__)
_tracer: trace.Tracer = _API_TRACER
_capture_content = False


def _set_attributes(target: Span, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if value is not None:
            target.set_attribute(key, value)


@contextmanager
def span(name: str, *, span_kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """Open a current span named ``name`` (e.g. ``cache.lookup``) with attributes that are not None.

    Dotted attribute names can be passed with a dict: ``span("x", **{"gen_ai.request.model": m})``.
    An exception leaving the block is recorded and sets the span status to error.
    """
    with _tracer.start_as_current_span(name, kind=span_kind) as current:
        _set_attributes(current, attributes)
        yield current


@contextmanager
def detached_span(name: str, *, span_kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Iterator[Span]:
    """A child of the current span that is *not* made current (safe across ``yield`` in generators)."""
    current = _tracer.start_span(name, kind=span_kind)
    _set_attributes(current, attributes)
    try:
        yield current
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        current.end()


def tracer() -> trace.Tracer:
    """The tracer in use (the SDK's once :func:`configure_tracing` ran, else the API's)."""
    return _tracer


def capture_content() -> bool:
    """True when prompt and completion text may be put in spans (``observability.capture_content``)."""
    return _capture_content


def _parse_headers(raw: str | None) -> dict[str, str]:
    """``key=value,key2=value2`` (the OTEL_EXPORTER_OTLP_HEADERS format) into a dict."""
    headers: dict[str, str] = {}
    for part in (raw or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[key.strip()] = value.strip()
    return headers


def configure_tracing(settings: ObservabilitySettings) -> Callable[[], Awaitable[None]] | None:
    """Install the SDK with the OTLP/HTTP exporter when ``settings.otlp_endpoint`` is set.

    Returns an async callable that flushes pending spans and shuts the exporter down (call it at
    shutdown), or None when tracing stays off. The provider is Sovereign's own (the global one is
    left alone), so embedding the gateway in another traced process does not clash.
    """
    global _tracer, _capture_content
    _capture_content = settings.capture_content
    if not settings.otlp_endpoint:
        return None
    require("opentelemetry.sdk", extra="otel", feature="exporting traces (observability.otlp_endpoint)")
    require("opentelemetry.exporter.otlp.proto.http", extra="otel", feature="exporting traces")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)))
    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint,
        headers=_parse_headers(resolve_secret(settings.otlp_headers_env)),
        timeout=settings.otlp_timeout_s,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = provider.get_tracer("sovereign", __version__)

    async def close() -> None:
        global _tracer, _capture_content
        _tracer = _API_TRACER
        _capture_content = False
        await asyncio.to_thread(provider.shutdown)  # flushes the batch; blocking HTTP off the loop

    return close
