"""Metric definitions, JSON logs and content capture in spans (in-process, real exporter and engine)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from prometheus_client.metrics import MetricWrapperBase

from sovereign.config import ObservabilitySettings
from sovereign.observability import metrics, tracing
from sovereign.observability.logging import REQUEST_ID, ContextFilter, JsonFormatter, configure_logging
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams
from tests.observability.otlp_sink import OtlpSink

UNBOUNDED = {"user", "prompt", "request_id", "tenant", "doc_id", "document", "query", "path", "text", "trace_id"}


def _families() -> list[MetricWrapperBase]:
    return [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]


def test_every_metric_follows_conventions() -> None:
    names = [m._name for m in _families()]
    assert len(names) == len(set(names)) and len(names) >= 30
    for metric in _families():
        assert metric._name.startswith("sovereign_"), metric._name
        assert metric._documentation.strip(), metric._name
        assert not UNBOUNDED & set(metric._labelnames), (metric._name, metric._labelnames)
        if metric._type == "gauge":
            assert metric._multiprocess_mode != "all", metric._name  # say how workers combine
        if metric._type == "histogram":
            assert metric._name.endswith(("_seconds", "_per_second")), metric._name


def test_every_metric_is_recorded_somewhere() -> None:
    """A family defined in metrics.py but never updated would be an empty panel or a silent alert."""
    from pathlib import Path

    src = Path(metrics.__file__).resolve().parents[1]
    code = "\n".join(p.read_text() for p in src.rglob("*.py"))  # a definition is not a NAME.method( call
    unused = [name for name, value in vars(metrics).items()
              if isinstance(value, MetricWrapperBase) and not re.search(rf"\b{name}\.\w+\(", code)]
    assert not unused, unused


def test_json_formatter_carries_request_id_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("sovereign.test-json")
    logger.addHandler(handler)
    token = REQUEST_ID.set("rid-42")
    try:
        logger.warning("hello %s", "world", extra={"status": 200, "duration_ms": 1.5})
    finally:
        REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert record["msg"] == "hello world" and record["level"] == "WARNING"
    assert record["request_id"] == "rid-42" and record["status"] == 200 and record["duration_ms"] == 1.5
    assert record["ts"].endswith("+00:00")


def test_configure_logging_restores_previous_setup() -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("uvicorn.error").propagate)
    httpx_level = logging.getLogger("httpx").level
    restore = configure_logging(ObservabilitySettings(log_level="debug"))
    assert root.level == logging.DEBUG
    # one httpx INFO line per upstream request would double the log and slow the proxy path
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
    restore()
    assert (root.level, list(root.handlers), logging.getLogger("uvicorn.error").propagate) == before
    assert logging.getLogger("httpx").level == httpx_level


def test_tracing_off_by_default() -> None:
    assert tracing.configure_tracing(ObservabilitySettings()) is None
    assert not tracing.capture_content()


@pytest.mark.anyio
async def test_engine_span_captures_content_only_when_enabled(llama: object) -> None:
    secret = "purple-walrus-canary"
    request = GenerationRequest(model="m", sampling=SamplingParams(max_tokens=3, temperature=0),
                                messages=(ChatMessage("user", f"Say {secret}"),))
    for capture in (False, True):
        with OtlpSink() as sink:
            close = tracing.configure_tracing(ObservabilitySettings(otlp_endpoint=sink.endpoint,
                                                                    capture_content=capture))
            assert close is not None
            with tracing.span("parent"):
                chunks = [c async for c in llama.stream(request)]  # type: ignore[attr-defined]
            await close()  # flushes the batch to the sink
            spans = {s["name"]: s for s in sink.spans()}
        engine = spans[f"chat {llama.name}"]  # type: ignore[attr-defined]
        assert engine["parent_span_id"] == spans["parent"]["span_id"]
        assert engine["attributes"]["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens
        found = any(secret.encode() in raw for raw in sink.raw)
        assert found is capture
        assert ("gen_ai.input.messages" in engine["attributes"]) is capture
