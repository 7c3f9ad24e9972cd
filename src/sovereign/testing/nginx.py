"""A throwaway ``nginx`` (Debian package) running the shipped edge config, and test certificates.

- :func:`make_certificates`: a private CA, a server certificate for ``127.0.0.1``/``localhost`` and
  a client certificate, made with the ``openssl`` CLI (also used by the Redis TLS tests);
- :func:`render_site`: ``deploy/nginx/sovereign.conf`` with its listen ports, upstream,
  certificate and log paths moved to test values, and chosen directives overridden;
- :class:`NginxProcess` / :func:`nginx_server`: nginx in the foreground (``daemon off``) with a
  private prefix, pid, temp and log paths (``-p``/``-c``/``-e``), so it never touches /etc/nginx,
  /var/lib/nginx or /var/log/nginx and several can run at once.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def nginx_binary() -> str | None:
    """The ``nginx`` executable: on PATH, else Debian's /usr/sbin (not on an ordinary user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files: ``ca`` (trust anchor), ``cert``/``key`` (server: IP 127.0.0.1, DNS localhost),
    ``client_cert``/``client_key`` (client authentication, signed by the same CA)."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_certificates(directory: Path) -> Certificates:
    """Create a one-day CA and two leaf certificates (P-256 keys) in ``directory``.

    Raises:
        RuntimeError: the ``openssl`` CLI is missing or fails.
    """
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl CLI is not installed (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=sovereign test CA", cwd=directory)
    leaves = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, extensions in leaves.items():
        (directory / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
        )
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=sovereign test {name}",
                 cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=directory)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return Certificates(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                        directory / "client.crt", directory / "client.key")


@dataclass(frozen=True, slots=True)
class EdgePorts:
    """127.0.0.1 ports of a rendered site: ``https`` (443), ``http`` (80), ``status`` (8081)."""

    https: int
    http: int
    status: int

    @classmethod
    def free(cls) -> EdgePorts:
        return cls(_free_port(), _free_port(), _free_port())


def _sub(pattern: str, replacement: str, text: str, *, expect: int | None = None) -> str:
    """``re.sub`` (multiline) that raises ValueError when the pattern matches no line (or not
    ``expect`` lines): a shipped config that changed shape must fail the render, not be tested
    half-rendered."""
    out, n = re.subn(pattern, replacement, text, flags=re.M)
    if n == 0 or (expect is not None and n != expect):
        raise ValueError(f"render_site: {pattern!r} matched {n} lines of the site config")
    return out


def render_site(
    text: str,
    *,
    ports: EdgePorts,
    upstream: str,
    certificates: Certificates,
    log_dir: Path,
    directives: Mapping[str, str] | None = None,
) -> str:
    """``deploy/nginx/sovereign.conf`` rewritten for a test run.

    Args:
        text: the shipped site config.
        ports: where to listen (127.0.0.1 only; the IPv6 ``listen [::]`` lines are dropped).
        upstream: ``host:port`` of the gateway, replacing ``127.0.0.1:8000``.
        certificates: the server certificate and key to serve.
        log_dir: replaces ``/var/log/nginx``.
        directives: ``{name: value}`` replacing the value of every ``name value;`` line
            (e.g. ``{"client_header_timeout": "1s"}``).

    Raises:
        ValueError: a line the rendering rewrites is not in ``text`` (exactly once where it must be).
    """
    out = _sub(r"^\s*listen \[::\]:\d+.*;\n", "", text, expect=2)
    out = _sub(r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{ports.https} ssl;", out, expect=1)
    out = _sub(r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{ports.http};", out, expect=1)
    out = _sub(r"^(\s*)listen 127\.0\.0\.1:8081;", rf"\1listen 127.0.0.1:{ports.status};", out, expect=1)
    out = _sub(r"^(\s*)server 127\.0\.0\.1:8000;", rf"\1server {upstream};", out, expect=1)
    out = _sub(r"^(\s*ssl_certificate)\s+\S+;", rf"\1 {certificates.cert};", out, expect=1)
    out = _sub(r"^(\s*ssl_certificate_key)\s+\S+;", rf"\1 {certificates.key};", out, expect=1)
    out = _sub(r"/var/log/nginx/", f"{log_dir}/", out)
    for name, value in (directives or {}).items():
        out = _sub(rf"^(\s*){re.escape(name)}\s+[^;]*;", rf"\g<1>{name} {value};", out)
    return out


class NginxProcess:
    """``nginx`` in the foreground under ``workdir`` serving one rendered site (http context).

    The main config it writes around the site: ``daemon off``, one worker, pid, error log and every
    temp path under ``workdir``; run as root (as here), workers stay root (``user root``) so they can
    write request-body temp files into the private, 0700 test directory.

    Raises (constructor): RuntimeError when nginx is not installed.
    """

    def __init__(self, workdir: Path, site: str) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed; run scripts/setup.sh --dev")
        self.binary = binary
        self.workdir = workdir
        self.site = site
        self.conf = workdir / "nginx.conf"
        self.error_log = workdir / "logs" / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._write()

    def _write(self) -> None:
        logs, temp = self.workdir / "logs", self.workdir / "temp"
        for directory in (logs, temp):
            directory.mkdir(parents=True, exist_ok=True)
        (self.workdir / "sovereign.conf").write_text(self.site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        temps = "".join(f"    {kind}_temp_path {temp / kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.conf.write_text(
            f"daemon off;\nworker_processes 1;\n{user}pid {self.workdir / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\nevents {{ worker_connections 512; }}\n"
            f"http {{\n    default_type application/octet-stream;\n{temps}"
            f"    include {self.workdir / 'sovereign.conf'};\n}}\n"
        )

    def _args(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.workdir}/", "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the written config (returncode, stdout, stderr)."""
        return subprocess.run(self._args("-t"), capture_output=True, text=True, timeout=30)

    def start(self, wait_port: int) -> None:
        """Start nginx and wait until ``127.0.0.1:wait_port`` accepts connections.

        Raises:
            RuntimeError: nginx exited or did not listen within 10 s (with its error log).
        """
        with (self.workdir / "logs" / "stderr.log").open("ab") as stderr:
            self.proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", wait_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {wait_port}: {self.log_text()}")

    def log_text(self) -> str:
        """The error log and nginx's stderr so far ('' when none)."""
        logs = (self.error_log, self.workdir / "logs" / "stderr.log")
        return "".join(path.read_text() for path in logs if path.exists())

    def stop(self) -> None:
        """Fast shutdown (SIGTERM), then wait."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextmanager
def nginx_server(workdir: Path, site: str, wait_port: int) -> Iterator[NginxProcess]:
    """Start nginx on the rendered ``site``; yield it; stop it on exit.

    Raises:
        RuntimeError: nginx is missing, or did not start (with its error log).
    """
    server = NginxProcess(workdir, site)
    server.start(wait_port)
    try:
        yield server
    finally:
        server.stop()
