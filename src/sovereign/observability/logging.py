"""Structured logs: stdlib ``logging`` with a JSON formatter (python-json-logger; no second logging stack).

Every record carries the id of the request being served (``request_id``, the same value as the
``X-Request-ID`` response header and the ``sovereign.request_id`` span attribute) and the current
``trace_id`` / ``span_id``, taken from context variables, so a log line, a trace and a client
report can be joined. Extra fields go in ``extra={...}`` and come out as top-level keys.

Prompt and completion text are never logged: the access log carries counts and timings only.
:func:`configure_logging` also routes uvicorn's own loggers through the same handler, so one
process writes one format; our access log (``sovereign.access``, with latency and token counts)
replaces uvicorn's.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS, LogData
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

if TYPE_CHECKING:
    from sovereign.config import ObservabilitySettings

REQUEST_ID: ContextVar[str | None] = ContextVar("sovereign_request_id", default=None)

# Attributes every LogRecord has (and uvicorn's ``color_message``), plus our own top-level keys:
# anything else on a record came from ``extra=`` and is emitted (an extra never overrides ``ts`` etc.).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    *RESERVED_ATTRS, "asctime", "color_message", "taskName", "ts", "level", "logger"}
_UVICORN = ("uvicorn", "uvicorn.error")


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` from the current context to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line: ``ts`` (UTC ISO 8601, milliseconds), ``level``, ``logger``, ``msg``
    (the formatted message), ``exc`` (the traceback, when there is one), then the context ids and
    ``extra=`` fields that are not None, as top-level keys. Non-JSON values are written with ``str``.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "message": "msg", "exc_info": "exc"},
            reserved_attrs=sorted(_STANDARD),
            json_ensure_ascii=False,
            json_serializer=functools.partial(json.dumps, separators=(",", ":")),  # compact, as grep'd in docs
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data: LogData) -> LogData:
        return {key: value for key, value in log_data.items() if value is not None}


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, still with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request_id={request_id}]" if request_id else line


def configure_logging(settings: ObservabilitySettings) -> Callable[[], None]:
    """Install one stderr handler on the root logger; returns a callable restoring the previous setup.

    uvicorn's ``uvicorn`` / ``uvicorn.error`` loggers propagate to it, and ``uvicorn.access`` is
    silenced because ``sovereign.access`` logs every request with latency and token counts. The
    ``httpx`` / ``httpcore`` INFO line per upstream request ("HTTP Request: POST ...") is silenced
    too (warnings still pass): it doubled the log volume and cost measurable proxy latency.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_json else TextFormatter())
    handler.addFilter(ContextFilter())
    level = logging.getLevelName(settings.log_level.upper())
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    root.handlers = [h for h in root.handlers if not isinstance(h, logging.StreamHandler) or _is_pytest(h)]
    root.addHandler(handler)
    root.setLevel(level)
    saved: dict[str, tuple[list[logging.Handler], bool, int]] = {}
    quiet = ("uvicorn.access", "httpx", "httpcore")
    for name in (*_UVICORN, *quiet, "sovereign"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.propagate, logger.level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [], True
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("sovereign").setLevel(level)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(saved_root[0])
        for existing in saved_root[1]:
            if existing not in root.handlers:
                root.addHandler(existing)
        for name, (handlers, propagate, old_level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(old_level)

    return restore


def _is_pytest(handler: logging.Handler) -> bool:
    """pytest's capture handlers subclass StreamHandler; keep them so tests still see records."""
    return type(handler).__module__.startswith("_pytest")
