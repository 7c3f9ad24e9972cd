"""The nginx edge (deploy/nginx/sovereign.conf) on the real Debian nginx, in front of a real gateway.

The shipped file is rendered for test ports (127.0.0.1 only, private prefix, pid and logs,
``daemon off``), checked with ``nginx -t``, then put in front of the session's live gateway and,
for the forwarded headers and upstream keepalive, in front of a small header-echo HTTP server.

Bad inputs tried: a body over client_max_body_size (8 MiB + 1 byte: nginx's 413, not the
gateway's), a body the gateway itself refuses (its JSON 413 passes through), plain HTTP (301 to
HTTPS), a slow-loris client trickling its request header (cut off by client_header_timeout, 1 s in
the rendered config, while a normal request succeeds meanwhile), a client that does not trust the
test CA (TLS refused), a client-forged X-Forwarded-For and X-Forwarded-Proto (replaced), a client
``Connection: close`` (not passed on: the upstream connection stays alive).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from sovereign.config import ServerSettings
from sovereign.testing.nginx import (
    Certificates,
    EdgePorts,
    NginxProcess,
    make_certificates,
    nginx_binary,
    render_site,
)
from tests.conftest import ROOT, LiveServer

pytestmark = pytest.mark.integration
SITE = ROOT / "deploy" / "nginx" / "sovereign.conf"
MODEL = "smollm2-135m-instruct"
HEADER_TIMEOUT_S = 1.0
# Skipped only outside CI: in CI (CI=true) a missing nginx fails the tests instead.
needs_nginx = pytest.mark.skipif(
    nginx_binary() is None and not os.environ.get("CI"),
    reason="nginx missing: scripts/setup.sh --dev installs it (Debian nginx)",
)


@dataclass
class Edge:
    """A running nginx: ``base`` is its HTTPS origin, ``ctx`` an SSL context trusting the test CA."""

    nginx: NginxProcess
    ports: EdgePorts
    ctx: ssl.SSLContext

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.ports.https}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, verify=self.ctx, timeout=60, **kwargs)

    def access_log(self) -> str:
        path = self.nginx.workdir / "logs" / "access.log"
        return path.read_text() if path.exists() else ""


def _start_edge(workdir: Path, certificates: Certificates, upstream: str) -> Edge:
    assert nginx_binary(), "nginx missing: scripts/setup.sh --dev installs it (Debian nginx)"
    ports = EdgePorts.free()
    site = render_site(SITE.read_text(), ports=ports, upstream=upstream, certificates=certificates,
                       log_dir=workdir / "logs", directives={"client_header_timeout": f"{HEADER_TIMEOUT_S:g}s"})
    nginx = NginxProcess(workdir, site)
    nginx.start(ports.https)
    return Edge(nginx, ports, ssl.create_default_context(cafile=str(certificates.ca)))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("edge-certs"))


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates, live_server: LiveServer
) -> Iterator[Edge]:
    """nginx on the shipped config in front of the session's live gateway."""
    running = _start_edge(tmp_path_factory.mktemp("edge"), certificates, f"127.0.0.1:{live_server.port}")
    yield running
    running.nginx.stop()
    serious = [line for line in running.nginx.log_text().splitlines() if re.search(r"\[(alert|crit|emerg)\]", line)]
    assert not serious, serious  # e.g. a worker that could not write a request-body temp file


@needs_nginx
def test_nginx_t_accepts_the_shipped_config_without_warnings(tmp_path: Path, certificates: Certificates) -> None:
    site = render_site(SITE.read_text(), ports=EdgePorts.free(), upstream="127.0.0.1:8000",
                       certificates=certificates, log_dir=tmp_path / "logs")
    result = NginxProcess(tmp_path, site).check()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def _directive(name: str) -> str:
    values = re.findall(rf"^\s*{name}\s+([^;]+);", SITE.read_text(), flags=re.M)
    assert len(values) == 1, f"{name}: {values}"
    return values[0].strip()


def test_body_limit_equals_the_gateway_default_and_every_server_hides_its_version() -> None:
    value = _directive("client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    size = int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit.lower()]
    assert size == ServerSettings.model_fields["max_body_bytes"].default

    text = SITE.read_text()
    servers = len(re.findall(r"^server \{", text, flags=re.M))
    assert re.findall(r"^\s*server_tokens\s+(\w+);", text, flags=re.M) == ["off"] * servers


@needs_nginx
def test_chat_completion_over_https_with_the_openai_sdk(edge: Edge) -> None:
    with (
        httpx2.Client(verify=edge.ctx, timeout=60) as http,  # the openai SDK's own httpx
        openai.OpenAI(base_url=edge.base + "/v1", api_key="unused", max_retries=0, http_client=http) as client,
    ):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        completion = raw.parse()
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= 8
    assert raw.headers["strict-transport-security"].startswith("max-age=")
    assert raw.headers["server"] == "nginx"  # server_tokens off: no version


@needs_nginx
def test_a_client_that_does_not_trust_the_ca_is_refused(edge: Edge) -> None:
    with httpx.Client(timeout=10) as untrusting, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(edge.base + "/v1/models")


@needs_nginx
def test_stream_arrives_token_by_token(edge: Edge) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count from 1 to 100, separated by commas."}],
            "max_tokens": 24, "temperature": 0, "stream": True, "ignore_eos": True}
    arrivals: list[float] = []
    with edge.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                lines.append(line[6:])
                if line[6:] != "[DONE]" and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    arrivals.append(time.monotonic())
    assert lines[-1] == "[DONE]"
    assert len(arrivals) >= 12, f"only {len(arrivals)} content events"
    # Buffered, every event would land in one burst at the end (microseconds apart). Streamed, they
    # spread over the generation: many arrive well before the last one (by a quarter of the span
    # from the first to the last event, and by 20 ms at least), whatever the prompt's prefill took.
    span = arrivals[-1] - arrivals[0]
    early = [t for t in arrivals if arrivals[-1] - t >= max(0.25 * span, 0.02)]
    assert len(early) >= 5, f"{len(early)} of {len(arrivals)} events clearly before the last ({span:.3f}s span)"


@needs_nginx
def test_body_over_the_limit_gets_413_from_nginx(edge: Edge) -> None:
    limit = ServerSettings.model_fields["max_body_bytes"].default
    with edge.client() as http:
        refused = http.post("/v1/chat/completions", content=b"x" * (limit + 1),
                            headers={"content-type": "application/json"})
        assert refused.status_code == 413
        assert refused.headers["server"] == "nginx" and "text/html" in refused.headers["content-type"]
        assert "413 Request Entity Too Large" in refused.text
        # Under nginx's limit (and past its 1 MiB in-memory buffer): the body reaches the gateway,
        # whose own, smaller limit in the test session (64 KiB) answers with the OpenAI envelope.
        padding = "y" * (1 << 20)
        passed = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [
            {"role": "user", "content": padding}], "max_tokens": 1})
    assert passed.status_code == 413
    assert passed.headers["content-type"].startswith("application/json")
    assert set(passed.json()["error"]) >= {"message", "type"}


@needs_nginx
def test_plain_http_is_redirected_to_https(edge: Edge) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.get(f"http://127.0.0.1:{edge.ports.http}/v1/models?limit=2")
    assert response.status_code == 301
    assert response.headers["location"] == "https://127.0.0.1/v1/models?limit=2"
    assert response.headers["server"] == "nginx"


@needs_nginx
def test_health_endpoint_answers_on_loopback(edge: Edge) -> None:
    response = httpx.get(f"http://127.0.0.1:{edge.ports.status}/nginx-health", timeout=10)
    assert response.status_code == 200 and response.text == "ok\n"


def _trickle(slow: ssl.SSLSocket, began: float) -> float | None:
    """Send a header one byte every 0.1 s (20 s in all); seconds until nginx closed, or None."""
    for byte in b"X-Slow: " + b"a" * 200:
        try:
            slow.sendall(bytes([byte]))
            readable, _, _ = select.select([slow], [], [], 0.1)
            if readable and slow.recv(4096) == b"":
                return time.monotonic() - began
        except ssl.SSLWantReadError:
            continue  # TLS 1.3 session tickets, no application data
        except OSError:  # reset / broken pipe (ssl.SSLError is one)
            return time.monotonic() - began
    return None


@needs_nginx
def test_slow_loris_is_cut_off_while_a_normal_request_succeeds(edge: Edge) -> None:
    slow = edge.ctx.wrap_socket(socket.create_connection(("127.0.0.1", edge.ports.https), timeout=5),
                                server_hostname="127.0.0.1")
    slow.setblocking(False)
    began = time.monotonic()
    cut: list[float | None] = []
    try:
        slow.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        thread = threading.Thread(target=lambda: cut.append(_trickle(slow, began)))
        thread.start()
        time.sleep(0.3)
        with edge.client() as http:
            normal = http.get("/v1/models")
        normal_done = time.monotonic() - began
        thread.join(timeout=30)
    finally:
        slow.close()
    assert normal.status_code == 200 and normal.json()["data"]
    assert cut and cut[0] is not None, "nginx kept a 20 s trickled header open"
    assert normal_done < cut[0] < HEADER_TIMEOUT_S + 3, (normal_done, cut[0])
    assert "timed out (110: Connection timed out) while reading client request headers" in edge.nginx.log_text()


@needs_nginx
def test_request_id_is_passed_through_or_generated(edge: Edge) -> None:
    with edge.client() as http:
        given = http.get("/v1/models", headers={"X-Request-Id": "edge-test-4711"})
        generated = http.get("/v1/models")
    assert given.headers["x-request-id"] == "edge-test-4711"
    rid = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid  # nginx's $request_id, echoed by the gateway
    log = edge.access_log()
    assert "rid=edge-test-4711" in log and f"rid={rid}" in log


class _Echo(BaseHTTPRequestHandler):
    """Answers every GET with the request headers and the client's port (HTTP/1.1 keepalive)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()},
                           "peer_port": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_edge(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[Edge]:
    """nginx on the shipped config in front of a header-echo HTTP/1.1 server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        running = _start_edge(tmp_path_factory.mktemp("echo-edge"), certificates,
                              f"127.0.0.1:{server.server_address[1]}")
        yield running
        running.nginx.stop()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@needs_nginx
def test_forwarded_headers_replace_forged_ones(echo_edge: Edge) -> None:
    with echo_edge.client() as http:
        seen = http.get("/echo", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http",
                                          "X-Request-Id": "abc-1"}).json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "127.0.0.1"
    assert seen["x-request-id"] == "abc-1"


@needs_nginx
def test_upstream_connections_are_kept_alive(echo_edge: Edge) -> None:
    ports = set()
    for _ in range(4):  # a new client connection each time, asking to close it
        with echo_edge.client() as http:
            seen = http.get("/echo", headers={"Connection": "close"}).json()
        assert "close" not in seen["headers"].get("connection", "")
        ports.add(seen["peer_port"])
    assert len(ports) == 1, f"nginx opened {len(ports)} upstream connections for 4 requests"
