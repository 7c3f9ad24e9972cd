"""A tiny OTLP/HTTP trace receiver for tests: decodes real export requests with opentelemetry-proto."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def attribute_value(value: AnyValue) -> Any:
    """A protobuf AnyValue as a Python value (arrays as lists)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [attribute_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpSink:
    """``with OtlpSink() as sink:`` listens on 127.0.0.1; ``sink.endpoint`` is the traces URL.

    ``sink.requests`` holds every decoded ``ExportTraceServiceRequest``, ``sink.raw`` the bodies.
    """

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        self.content_types: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                message = ExportTraceServiceRequest()
                message.ParseFromString(body)
                sink.raw.append(body)
                sink.content_types.append(self.headers.get("content-type", ""))
                sink.requests.append(message)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def spans(self) -> list[dict[str, Any]]:
        """Every received span as a dict: name, ids (hex), kind, attributes, resource attributes."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: attribute_value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        out.append({
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "status": span.status.code,
                            "attributes": {a.key: attribute_value(a.value) for a in span.attributes},
                            "resource": resource,
                        })
        return out

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Poll until ``predicate(spans)`` is true; return the spans (assert on them afterwards)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.1)
        return self.spans()
