"""The managed ``llama-server`` process: command line, start, health wait, log forwarding, restart
with back-off, and stop (no orphans).

``llama-server`` is llama.cpp's own OpenAI-compatible server (``tools/server`` in the llama.cpp
tree), built once by ``scripts/setup.sh``. Sovereign runs it the way Ollama runs its llama.cpp
runners: a child process on 127.0.0.1 and a free port, supervised by the gateway.

Lifecycle of one :class:`LlamaServerProcess`:

1. :meth:`~LlamaServerProcess.start` spawns the binary in a new session (a terminal's Ctrl-C reaches
   the gateway, which then stops the engine in order) with ``PR_SET_PDEATHSIG = SIGKILL``
   (``prctl(2)``), so the kernel kills the engine if the gateway dies without cleaning up (SIGKILL,
   a crash). It then polls ``GET /health`` (503 while the model loads, 200 when ready).
2. Every line the engine writes goes to the ``sovereign.engine`` logger (so into the JSON log),
   at WARNING when it reports an error, else DEBUG; the last lines are kept for error messages.
3. A watcher awaits the process. If it exits while not being stopped, the exit is logged and
   counted (``sovereign_engine_restarts_total``), and the engine is started again after an
   exponential back-off (``restart_initial_s`` doubling up to ``restart_max_s``; reset once an
   instance stayed healthy for ``restart_reset_s``).
4. :meth:`~LlamaServerProcess.stop` sends SIGTERM, waits ``stop_timeout_s``, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path

import httpx
import psutil

from sovereign.backends.base import ProcessInfo
from sovereign.config import EngineSettings
from sovereign.errors import EngineUnavailableError
from sovereign.observability import metrics

log = logging.getLogger("sovereign.engine")

BINARY_NAME = "llama-server"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_ERROR_LINE = re.compile(r"\b(error|failed|abort|exception)\b", re.IGNORECASE)
_KV_BUFFER = re.compile(r"KV buffer size =\s*([0-9.]+) MiB")


def find_binary(configured: Path | None = None) -> Path:
    """The ``llama-server`` executable: ``configured`` when given, else the one ``scripts/setup.sh``
    linked next to this Python interpreter (``.venv/bin/llama-server``), else the first on ``PATH``.

    Raises:
        EngineUnavailableError: none is found or it is not executable; the message says how to fix it.
    """
    candidates = [configured] if configured else [Path(sys.executable).parent / BINARY_NAME]
    if not configured and (on_path := shutil.which(BINARY_NAME)):
        candidates.append(Path(on_path))
    for path in candidates:
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    where = configured or f"{candidates[0]} or PATH"
    raise EngineUnavailableError(
        f"llama-server was not found at {where}. Run scripts/setup.sh (it builds llama-server once) or set "
        "engine.server_binary to a llama-server executable."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_threads() -> int:
    """Physical cores (llama.cpp's own default), at least 1."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def command_line(binary: Path, model: Path, alias: str, port: int, s: EngineSettings) -> list[str]:
    """The ``llama-server`` argv for ``s`` (flags as documented in llama.cpp's tools/server/README.md).

    ``-c`` is the whole KV cache, split evenly between ``-np`` slots, so it is ``n_ctx * n_parallel``
    and every slot holds one full ``n_ctx`` window. ``--jinja`` renders the GGUF's own chat template.
    A request waiting for a slot holds one of the server's HTTP threads; beyond its fixed pool
    (``n_parallel + 4``) threads are made on demand, and ``/health`` and ``/tokenize`` were seen to
    time out behind a full queue (tests/backends/test_managed.py), so ``--threads-http`` covers every
    admitted request (slots + ``max_queue``) plus 4 for ``/health``, ``/tokenize`` and the like.
    """
    threads = s.n_threads or default_threads()
    argv = [
        str(binary), "--model", str(model), "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "--ctx-size", str(s.n_ctx * s.n_parallel), "--parallel", str(s.n_parallel),
        "--threads", str(threads), "--threads-batch", str(s.n_threads_batch or threads),
        "--batch-size", str(s.n_batch), "--ubatch-size", str(min(s.n_ubatch, s.n_batch)),
        "--cache-type-k", s.cache_type_k, "--cache-type-v", s.cache_type_v,
        "--n-gpu-layers", str(s.n_gpu_layers), "--flash-attn", s.flash_attn, "--cache-ram", str(s.cache_ram_mib),
        "--threads-http", str(s.n_parallel + s.max_queue + 4), "--jinja", "--metrics", "--no-webui",
    ]
    if s.mmproj_path is not None:
        argv += ["--mmproj", str(s.mmproj_path)]
    return argv + list(s.extra_args)


def engine_environment(s: EngineSettings) -> dict[str, str]:
    """The environment of the engine process: the gateway's own, plus ``GOMP_SPINCOUNT``.

    llama.cpp is built with OpenMP; libgomp's idle threads spin 300,000 rounds before sleeping
    (libgomp manual, "GOMP_SPINCOUNT"). Measured here (2 cores, 2 threads per engine, SmolLM2):
    two engines decoding at once fell to 10-14 tokens/s each with the default and kept 29-33 with
    1,000, while one engine alone ran at least as fast (1 stream 92-120, 8 streams 156-160 tokens/s).
    """
    env = dict(os.environ)
    if s.omp_spin_count is not None:
        env["GOMP_SPINCOUNT"] = str(s.omp_spin_count)
    return env


def _die_with_parent() -> None:
    """``preexec_fn``: the kernel sends SIGKILL to the engine when the gateway process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LlamaServerProcess:
    """One supervised ``llama-server`` serving ``model`` under public name ``alias``.

    Args:
        settings: the ``[engine]`` section (threads, slots, KV cache type, restart back-off...).
        model: the GGUF file to serve.
        alias: the model id the engine answers to (``--alias``), and the ``engine`` label of metrics.
        client: an ``httpx.AsyncClient`` for the health polls (owned by the caller).
    """

    def __init__(self, settings: EngineSettings, model: Path, alias: str, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.model = model
        self.alias = alias
        self._client = client
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.restarts = 0
        self.tail: deque[str] = deque(maxlen=40)
        self.kv_buffer_mib: list[float] = []
        self._healthy = asyncio.Event()
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str | None:
        """Root URL of the running engine (``http://127.0.0.1:PORT``), None before the first start."""
        return None if self.port is None else f"http://127.0.0.1:{self.port}"

    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    @property
    def supervising(self) -> bool:
        """True from a successful start until :meth:`stop`: a down engine is being restarted."""
        return self._watcher is not None and not self._watcher.done()

    def info(self) -> ProcessInfo:
        pid = self.proc.pid if self.proc is not None and self.proc.returncode is None else None
        return ProcessInfo(pid, self.url, self.healthy, self.restarts, self.settings.n_parallel)

    async def start(self) -> None:
        """Spawn the engine and wait until ``/health`` answers 200; idempotent while it runs.

        Raises:
            EngineUnavailableError: no binary, no model file, or the engine exited or stayed
                unhealthy for ``start_timeout_s`` (the message carries its last log lines).
        """
        async with self._lock:
            if self.proc is not None and self.proc.returncode is None and self.healthy:
                return
            self._stopping = False
            await self._spawn_until_healthy()
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.create_task(self._watch(), name=f"llama-server watcher {self.alias}")

    async def wait_healthy(self, timeout_s: float) -> None:
        """Wait until the engine is healthy (e.g. restarted after a crash).

        Raises:
            EngineUnavailableError: still not healthy after ``timeout_s`` seconds, or stopped.
        """
        if self._stopping:
            raise EngineUnavailableError(f"Engine {self.alias} is stopped.")
        try:
            async with asyncio.timeout(timeout_s):
                await self._healthy.wait()
        except TimeoutError as exc:
            raise EngineUnavailableError(
                f"Engine {self.alias} is restarting and was not healthy within {timeout_s:.0f}s; retry later."
            ) from exc

    async def stop(self) -> None:
        """Stop supervising and terminate the engine (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        self._stopping = True
        self._healthy.clear()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        pid = self.proc.pid if self.proc is not None else None
        await self._terminate()
        metrics.ENGINE_UP.labels(engine=self.alias).set(0)
        if pid is not None:
            log.info("llama-server stopped", extra={"engine": self.alias, "pid": pid})

    # -- internals -------------------------------------------------------------------------------

    async def _spawn_until_healthy(self) -> None:
        binary = find_binary(self.settings.server_binary)
        if not self.model.is_file():
            raise EngineUnavailableError(f"Model file {self.model} does not exist; fix engine.model_path.")
        for attempt in range(3):  # the same port across restarts; a taken port is replaced
            if attempt or self.port is None:
                self.port = free_port()
            argv = command_line(binary, self.model, self.alias, self.port, self.settings)
            self.kv_buffer_mib = []
            self.tail.clear()  # the bind check and the error message read this instance's lines only
            self.proc = await asyncio.create_subprocess_exec(
                *argv, env=engine_environment(self.settings), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )
            log.info("llama-server started", extra={"engine": self.alias, "pid": self.proc.pid, "port": self.port,
                                                     "model_file": str(self.model)})
            self._reader = asyncio.create_task(self._forward(self.proc), name=f"llama-server log {self.alias}")
            if await self._await_health(self.proc):
                self._healthy.set()
                metrics.ENGINE_UP.labels(engine=self.alias).set(1)
                return
            await self._terminate()
            if not any("bind" in line.lower() for line in self.tail):
                break
        raise EngineUnavailableError(
            f"llama-server for {self.alias} did not become healthy within {self.settings.start_timeout_s:.0f}s "
            f"(exit code {self.proc.returncode if self.proc else None}). Last log lines: "
            + " | ".join(list(self.tail)[-6:])
        )

    async def _await_health(self, proc: asyncio.subprocess.Process) -> bool:
        deadline = time.monotonic() + self.settings.start_timeout_s
        url = f"{self.url}/health"
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                response = await self._client.get(url, timeout=2.0)
                if response.status_code == 200:
                    return True
            await asyncio.sleep(0.05)
        return False

    async def _forward(self, proc: asyncio.subprocess.Process) -> None:
        """Copy the engine's output into the log, line by line, until it closes."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self.tail.append(line)
            if match := _KV_BUFFER.search(line):
                self.kv_buffer_mib.append(float(match.group(1)))
            level = logging.WARNING if _ERROR_LINE.search(line) else logging.DEBUG
            log.log(level, line, extra={"engine": self.alias, "pid": proc.pid, "source": "llama-server"})

    async def _watch(self) -> None:
        """Restart the engine whenever it exits on its own (crash, OOM kill), with back-off."""
        backoff = self.settings.restart_initial_s
        while not self._stopping:
            proc = self.proc
            assert proc is not None
            started = time.monotonic()
            code = await proc.wait()
            await self._drain_log()
            if self._stopping:
                return
            self._healthy.clear()
            metrics.ENGINE_UP.labels(engine=self.alias).set(0)
            metrics.ENGINE_RESTARTS.labels(engine=self.alias).inc()
            self.restarts += 1
            if time.monotonic() - started >= self.settings.restart_reset_s:
                backoff = self.settings.restart_initial_s
            log.warning("llama-server exited; restarting", extra={
                "engine": self.alias, "pid": proc.pid, "exit_code": code, "restart_in_s": backoff,
                "restarts": self.restarts, "last_lines": list(self.tail)[-3:]})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.restart_max_s)
            try:
                async with self._lock:
                    if not self._stopping:
                        await self._spawn_until_healthy()
                        pid = self.proc.pid if self.proc is not None else None
                        log.info("llama-server restarted", extra={"engine": self.alias, "pid": pid})
            except EngineUnavailableError as exc:
                log.error("llama-server restart failed: %s", exc.message, extra={"engine": self.alias})

    async def _drain_log(self) -> None:
        """Wait for the log reader to copy the last lines of an exited engine."""
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.settings.stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await self._drain_log()
