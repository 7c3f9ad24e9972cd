"""Pure-ASGI middleware (no BaseHTTPMiddleware: it buffers streams and hides disconnects).

:class:`GatewayMiddleware` gives every HTTP request an id (``X-Request-ID``, echoed back or
generated), a receipt timestamp (``scope["state"]["t0"]``, used for TTFT), a body-size limit
(413 in the OpenAI envelope, checked on ``Content-Length`` and on the bytes actually received),
and the request count / duration / in-flight metrics labelled by route template and model.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sovereign.errors import RequestTooLargeError
from sovereign.observability import metrics


class _BodyTooLarge(Exception):
    pass


def route_label(scope: Scope) -> str:
    """Route template (``/v1/documents/{doc_id}``), or ``other`` for unmatched paths (bounded labels)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"


class GatewayMiddleware:
    """Request id, receipt time, body-size limit and request metrics. ``max_body_bytes`` in bytes."""

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
        status = 500

        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await self._reject(send, request_id)
            metrics.REQUESTS.labels(route="other", model="", status="413").inc()
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        metrics.REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            status = 413
            await self._reject(send, request_id)
        finally:
            metrics.REQUESTS_IN_FLIGHT.dec()
            route = route_label(scope)
            model = state.get("model", "")
            metrics.REQUESTS.labels(route=route, model=model, status=str(status)).inc()
            metrics.REQUEST_DURATION.labels(route=route, model=model).observe(time.perf_counter() - started)

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
