"""A throwaway ``redis-server`` (Debian package) on 127.0.0.1 for tests, optionally with a password
(``requirepass``) and TLS only (``--port 0 --tls-port``; Debian's Redis 7 is built with TLS)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RedisTLS:
    """TLS files (PEM) for a TLS-only server: its ``cert``/``key``, the ``ca`` that signed the
    clients' and its own certificate; ``client_cert``/``client_key`` given = clients must present a
    certificate (``tls-auth-clients yes``), else they need not (``no``)."""

    cert: Path
    key: Path
    ca: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def _resp(*parts: str) -> bytes:
    """One command in RESP (safe for any bytes in a password)."""
    out = f"*{len(parts)}\r\n".encode()
    for part in parts:
        raw = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return out


class RedisProcess:
    """A running ``redis-server``; ``stop()``/``start()`` simulate an outage on the same port (Redis
    comes back empty: no persistence), ``paused()`` a Redis that accepts connections but answers
    nothing (SIGSTOP ... SIGCONT).

    Args:
        workdir: its working directory (created).
        password: ``requirepass`` (the default user's password); None = no authentication.
        tls: serve TLS only, on ``port`` (no plain-text port).

    ``url`` is what a client needs: ``redis://[:PASSWORD@]127.0.0.1:PORT/0``, or with TLS
    ``rediss://...?ssl_ca_certs=CA&ssl_cert_reqs=required`` (plus ``ssl_certfile``/``ssl_keyfile``
    when clients must authenticate), the password percent-encoded.

    Raises (constructor): RuntimeError when redis-server is not installed.
    """

    def __init__(self, workdir: Path, *, password: str | None = None, tls: RedisTLS | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/setup.sh --dev")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.password = password
        self.tls = tls
        self.url = self.url_with(password)
        self.proc: subprocess.Popen[bytes] | None = None

    def url_with(self, password: str | None) -> str:
        """The client URL of this server carrying ``password`` (None: none), e.g. a wrong one."""
        auth = f":{quote(password, safe='')}@" if password is not None else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        query = {"ssl_ca_certs": str(self.tls.ca), "ssl_cert_reqs": "required"}
        if self.tls.client_cert is not None and self.tls.client_key is not None:
            query |= {"ssl_certfile": str(self.tls.client_cert), "ssl_keyfile": str(self.tls.client_key)}
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{urlencode(query)}"

    def _args(self) -> list[str]:
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.tls is None:
            return [*args, "--port", str(self.port)]
        return [*args, "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no" if self.tls.client_cert is None else "yes"]

    def _connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        if self.tls is None:
            return conn
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        if self.tls.client_cert is not None and self.tls.client_key is not None:
            context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context.wrap_socket(conn, server_hostname="127.0.0.1")

    def _pong(self) -> bool:
        with self._connect() as conn:
            hello = _resp("AUTH", self.password) if self.password is not None else b""
            conn.sendall(hello + _resp("PING"))
            reply = b""
            while b"PONG" not in reply and b"-" not in reply[:1] and len(reply) < 256:
                chunk = conn.recv(64)
                if not chunk:
                    break
                reply += chunk
            return b"+PONG" in reply

    def start(self) -> None:
        """Start the server and wait until it answers PING (after AUTH, over TLS when set).

        Raises:
            RuntimeError: not answering within 10 s.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._pong():
                    return
            except OSError:  # not listening yet (ssl.SSLError is an OSError)
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    @property
    def pid(self) -> int:
        """The server's process id. Raises RuntimeError when it is not running."""
        if self.proc is None:
            raise RuntimeError("redis-server is not running")
        return self.proc.pid

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the server (SIGSTOP) for the block; it resumes (SIGCONT) on exit, even on error."""
        pid = self.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def redis_server(
    workdir: Path, *, password: str | None = None, tls: RedisTLS | None = None
) -> Iterator[RedisProcess]:
    """Start ``redis-server`` on a free 127.0.0.1 port (with ``password`` / ``tls``: see
    :class:`RedisProcess`); yield it; stop it on exit."""
    server = RedisProcess(workdir, password=password, tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
