"""A throwaway plugin installed through a real ``sovereign`` entry point, configured without touching core.

The plugin module (``tests/plugins/echo_plugin.py``) is installed the way pip installs one: a
``*.dist-info`` folder with ``entry_points.txt`` on ``sys.path``, found by
``importlib.metadata``; then settings name its engine kind like a built-in's.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sovereign import plugins
from sovereign.backends.registry import ENGINES, ModelRegistry
from sovereign.config import load_settings
from sovereign.errors import ConfigError
from sovereign.rag.loaders import file_kind, load_bytes
from sovereign.server.app import create_app
from sovereign.testing.chat_backend_contract import ChatBackendContract
from tests.plugins.echo_plugin import EchoEngine

pytestmark = pytest.mark.anyio


def install_entry_point(site: Path) -> None:
    """What ``pip install sovereign-echo`` leaves behind: metadata naming the plugin module."""
    info = site / "sovereign_echo-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sovereign-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sovereign]\necho = tests.plugins.echo_plugin\n")


@pytest.fixture
def echo_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_entry_point(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins.reset()
    yield
    monkeypatch.undo()
    plugins.reset()


def test_without_the_plugin_its_kind_is_a_config_error_listing_known_kinds() -> None:
    plugins.reset()
    with pytest.raises(ConfigError, match=r"unknown engine kind 'echo'; known: embedded, "):
        load_settings(backends={"deployments": [{"name": "e", "model": "echo-model", "engine": "echo"}]})


@pytest.mark.usefixtures("echo_installed")
def test_plugin_kinds_sit_beside_the_built_ins() -> None:
    assert "echo" in ENGINES.names() and "vllm" in ENGINES.names()
    assert file_kind(Path("table.csv")) == "csv" and file_kind(Path("page.html")) == "html"
    doc = load_bytes(b"name,colour\nsky,blue\n", "table.csv", "csv")
    assert doc.sections[0].heading == "name,colour" and doc.metadata == {"format": "csv"}
    assert "echo" in sys.modules["tests.plugins.echo_plugin"].__name__


@pytest.mark.usefixtures("echo_installed")
def test_plugin_command_joins_the_cli() -> None:
    from sovereign.cli.main import _register_commands, app

    _register_commands()  # the CLI was built before the plugin was installed in this process
    result = CliRunner().invoke(app, ["echo-hello"])
    assert result.exit_code == 0 and "hello from the echo plugin" in result.output


@pytest.mark.usefixtures("echo_installed")
async def test_configured_plugin_engine_serves_through_the_gateway(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, cache={"backend": "scratch"}, rag={"store": "scratch"},
                             backends={"deployments": [{"name": "echo-1", "model": "echo-model", "engine": "echo"}],
                                       "default_route": "echo-model"})
    app = create_app(settings, ModelRegistry())
    async with app.router.lifespan_context(app):
        await app.state.loader
        assert (tmp_path / "scratch-cache.sqlite3").is_file() and (tmp_path / "scratch-rag").is_dir()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            models = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
            assert models["echo-model"]["owned_by"] == "echo-plugin"
            r = await http.post("/v1/chat/completions", json={
                "model": "echo-model", "max_tokens": 16,
                "messages": [{"role": "user", "content": "plugins need no core edit"}]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["choices"][0]["message"]["content"] == "plugins need no core edit"
            assert body["sovereign"]["route"]["deployment"] == "echo-1"
            assert r.headers["x-sovereign-cache"] == "bypass"  # temperature 1: not cached, but the cache is up
            bad = await http.post("/v1/completions", json={"model": "echo-model", "prompt": "x"})
            assert bad.status_code == 400  # bad input: a text completion to a chat-only plugin engine
            assert "does not support completions" in bad.json()["error"]["message"]


class TestEchoEngineContract(ChatBackendContract):
    """The plugin's engine passes the same contract as the built-in engines."""

    @pytest.fixture
    async def backend(self) -> AsyncIterator[EchoEngine]:
        engine = EchoEngine("echo")
        await engine.start()
        yield engine
        await engine.close()
