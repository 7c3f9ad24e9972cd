"""Every built-in engine and the router pass :class:`ChatBackendContract` against the real model.

The managed llama-server (the embedded default), an OpenAI-compatible backend over a plain
llama-server (the ``llamacpp-server`` kind, as for any remote engine), and a router in front of
that remote engine. The plugin engine passes the same class in tests/plugins.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from sovereign.backends.breaker import CircuitBreaker
from sovereign.backends.managed import ManagedLlamaServer
from sovereign.backends.openai_compat import OpenAICompatBackend
from sovereign.backends.router import Deployment, Router
from sovereign.config import DeploymentSettings, EngineSettings
from sovereign.testing.chat_backend_contract import ChatBackendContract
from sovereign.testing.llama_server import llama_server_args
from tests.conftest import free_port, wait_ready

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(scope="module")
def remote_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain llama-server serving SmolLM2 with a 1,024-token window, as a remote engine."""
    port = free_port()
    log = tmp_path_factory.mktemp("contract") / "llama.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(llama_server_args(port, "smol-remote"), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, log, timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def remote(url: str, client: httpx.AsyncClient) -> OpenAICompatBackend:
    settings = DeploymentSettings(name="smol-remote", model="smol-remote", engine="llamacpp-server", base_url=url,
                                  context_window=1024)
    return OpenAICompatBackend(settings, client)


class TestManagedEngine(ChatBackendContract):
    @pytest.fixture(scope="class")
    async def backend(self, engine_settings: EngineSettings) -> AsyncIterator[ManagedLlamaServer]:
        engine = ManagedLlamaServer(settings=engine_settings.model_copy(update={"n_parallel": 2}))
        await engine.start()
        yield engine
        await engine.close()


class TestRemoteLlamaServer(ChatBackendContract):
    @pytest.fixture(scope="class")
    async def backend(self, remote_url: str) -> AsyncIterator[OpenAICompatBackend]:
        async with httpx.AsyncClient() as client:
            backend = remote(remote_url, client)
            await backend.start()
            yield backend
            await backend.close()


class TestRouterOverRemote(ChatBackendContract):
    @pytest.fixture(scope="class")
    async def backend(self, remote_url: str) -> AsyncIterator[Router]:
        async with httpx.AsyncClient() as client:
            engine = remote(remote_url, client)
            router = Router("routed", [Deployment("smol-remote", engine, CircuitBreaker("smol-remote"), 1024)])
            await router.start()
            yield router
            await router.close()

