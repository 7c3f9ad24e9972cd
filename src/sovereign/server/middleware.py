"""Pure-ASGI middleware (no BaseHTTPMiddleware: it buffers streams and hides disconnects).

:class:`GatewayMiddleware` gives every HTTP request:

- an id (``X-Request-ID``, echoed back or generated), also in every log record of the request
  (``request_id``) and on its span (``sovereign.request_id``);
- a receipt timestamp (``scope["state"]["t0"]``, used for TTFT);
- a body-size limit (413 in the OpenAI envelope, checked on ``Content-Length`` and on the bytes
  actually received);
- an OpenTelemetry HTTP server span (W3C ``traceparent`` from the client is honoured) that every
  later hop (cache, agents, retrieval, engine) nests under, ending after the last byte;
- the request count / duration / in-flight metrics labelled by route template and model;
- one access-log record (``sovereign.access``) with status, latency, TTFT and token counts.

Routes report what they learnt through ``scope["state"]``: ``model`` (public model name),
``prompt_tokens``, ``completion_tokens`` and ``ttft_s``; ``on_finish`` async callbacks (given the
state) run after the last byte, e.g. to charge a key's tokens-per-minute budget. Probes (``/metrics``, ``/healthz``,
``/readyz``) get no span and log at DEBUG so scrapes do not drown real traffic.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sovereign.errors import RequestTooLargeError
from sovereign.observability import metrics, tracing
from sovereign.observability.logging import REQUEST_ID

access_log = logging.getLogger("sovereign.access")
PROBES = frozenset({"/metrics", "/healthz", "/readyz"})


class _BodyTooLarge(Exception):
    pass


def route_label(scope: Scope) -> str:
    """Route template (``/v1/documents/{doc_id}``), or ``other`` for unmatched paths (bounded labels)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"


def _server_span(scope: Scope, headers: dict[bytes, bytes], request_id: str) -> Any:
    """The request's SERVER span as a context manager, or a null context for probes."""
    if scope.get("path") in PROBES:
        return contextlib.nullcontext(None)
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
    method = scope.get("method", "GET")
    return tracing.tracer().start_as_current_span(
        method,
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
            "sovereign.request_id": request_id,
        },
    )


def _finish_span(current: Span | None, scope: Scope, route: str, status: int, state: dict[str, Any]) -> None:
    """Name the span ``METHOD /route/template`` (HTTP semconv) and add status, model and usage."""
    if current is None:
        return
    method = scope.get("method", "GET")
    current.update_name(f"{method} {route}" if route != "other" else method)
    current.set_attribute("http.route", route)
    current.set_attribute("http.response.status_code", status)
    for key, attribute in (("model", "gen_ai.request.model"), ("prompt_tokens", "gen_ai.usage.input_tokens"),
                           ("completion_tokens", "gen_ai.usage.output_tokens")):
        if state.get(key):
            current.set_attribute(attribute, state[key])
    if status >= 500:
        current.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))


def _access(scope: Scope, route: str, status: int, seconds: float, state: dict[str, Any]) -> None:
    ttft = state.get("ttft_s")
    level = logging.DEBUG if scope.get("path") in PROBES else logging.INFO
    access_log.log(level, "request", extra={
        "method": scope.get("method"),
        "path": scope.get("path"),
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "model": state.get("model") or None,
        "prompt_tokens": state.get("prompt_tokens"),
        "completion_tokens": state.get("completion_tokens"),
        "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
    })


class GatewayMiddleware:
    """Request id, receipt time, body-size limit, request span, metrics and access log."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["t0"] = started
        state["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._reject(send, request_id)
                metrics.REQUESTS.labels(route="other", model="", status="413").inc()
                _access(scope, "other", 413, time.perf_counter() - started, state)
                return
            with _server_span(scope, headers, request_id) as current:
                await self._serve(scope, receive, send, state, current)
        finally:
            REQUEST_ID.reset(token)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, state: dict[str, Any],
                     current: Span | None) -> None:
        request_id = state["request_id"]
        status = 500
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if too_large:
                return  # FastAPI answers a failed body read with a 400; the 413 below replaces it
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        metrics.REQUESTS_IN_FLIGHT.inc()
        try:
            with contextlib.suppress(_BodyTooLarge):
                await self.app(scope, limited_receive, send_wrapper)
            if too_large:  # a body without Content-Length (chunked) grew past the limit
                status = 413
                await self._reject(send, request_id)
        finally:
            metrics.REQUESTS_IN_FLIGHT.dec()
            seconds = time.perf_counter() - state["t0"]
            route = route_label(scope)
            model = state.get("model", "")
            metrics.REQUESTS.labels(route=route, model=model, status=str(status)).inc()
            metrics.REQUEST_DURATION.labels(route=route, model=model, status=str(status)).observe(seconds)
            _finish_span(current, scope, route, status, state)
            _access(scope, route, status, seconds, state)
            for callback in state.pop("on_finish", ()):  # e.g. charge the key's tokens-per-minute budget
                try:
                    await callback(state)
                except Exception:  # the response is sent: never fail the request here
                    logging.getLogger("sovereign.server").exception("on_finish callback failed")

    async def _reject(self, send: Send, request_id: str) -> None:
        error = RequestTooLargeError(
            f"Request body exceeds {self.max_body_bytes} bytes (server.max_body_bytes).", param=None
        )
        body = orjson.dumps(error.to_envelope())
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode("latin-1")),
            ],
        })
        await send({"type": "http.response.body", "body": body})
