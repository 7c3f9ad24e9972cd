"""The ``sovereign`` command as a user runs it (a real subprocess, the real model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sovereign", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def test_models_lists_the_default_models() -> None:
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m-instruct" in result.stdout and "all-minilm-l6-v2" in result.stdout


def test_one_shot_chat_streams_an_answer() -> None:
    result = run_cli("chat", "What is 2+2?", "--max-tokens", "12", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_interactive_chat_reads_turns_until_eof() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sovereign", "chat", "--max-tokens", "8", "--temperature", "0"],
        input="Hello there\n/exit\n", capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "you>" in proc.stdout and "model>" in proc.stdout


def test_bad_config_is_a_message_and_nonzero_exit(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nprot = 1\n")
    result = run_cli("models", "--config", str(bad))
    assert result.returncode == 1
    assert "error:" in result.stderr and "prot" in result.stderr
    assert "Traceback" not in result.stderr
    typo = run_cli("models", env={"SOVEREIGN_ENGINE__NCTX": "5"})
    assert typo.returncode == 1 and "SOVEREIGN_ENGINE__NCTX" in typo.stderr


def test_serve_rejects_a_missing_model_file(tmp_path: Path) -> None:
    result = run_cli("serve", "--model", str(tmp_path / "missing.gguf"))
    assert result.returncode != 0
    assert "missing.gguf" in result.stderr


def test_models_lists_configured_deployments_without_contacting_them(tmp_path: Path) -> None:
    config = tmp_path / "sovereign.toml"
    config.write_text(
        '[backends.aliases]\n"gpt-4o-mini" = "remote-chat"\n'
        "[[backends.deployments]]\n"
        'name = "vllm-a"\nmodel = "remote-chat"\nengine = "vllm"\n'
        'base_url = "http://127.0.0.1:9/v1"\n'  # the discard port: nothing answers there
    )
    result = run_cli("models", "--config", str(config), env={"COLUMNS": "200"}, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert "vllm-a (vllm)" in rows["remote-chat"]
    assert "alias of remote-chat" in rows["gpt-4o-mini"]
    assert "smollm2-135m-instruct" in rows and "default" in rows
