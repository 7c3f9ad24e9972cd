"""Checked against reality: llama.cpp's own KV allocation, the CLI as a process, the HTTP route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sovereign.backends.managed import ManagedLlamaServer, default_model_path
from sovereign.config import EngineSettings, load_settings
from sovereign.hardware import kv
from sovereign.hardware.model import read_model

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "model_configs"


@pytest.mark.anyio
@pytest.mark.parametrize(("cache", "ggml_type", "per_token_bytes"),
                         [("fp16", "f16", 23_040), ("q8_0", "q8_0", 12_240), ("q4_0", "q4_0", 6_480)])
async def test_planner_kv_bytes_match_what_llamacpp_allocates(
    engine_settings: EngineSettings, cache: str, ggml_type: str, per_token_bytes: int
) -> None:
    """SmolLM2-135M at n_ctx 1024, one slot: llama-server logs 22.50 MiB of f16 KV, 11.95 MiB of
    q8_0 and 6.33 MiB of q4_0 (ggml block sizes 34 and 18 bytes per 32 values)."""
    settings = engine_settings.model_copy(update={"n_parallel": 1, "cache_type_k": ggml_type,
                                                  "cache_type_v": ggml_type, "flash_attn": "on",
                                                  "extra_args": ["--log-verbosity", "4"]})
    engine = ManagedLlamaServer(settings)
    await engine.start()
    try:
        allocated = engine.kv_cache_bytes()
    finally:
        await engine.close()
    facts = read_model(default_model_path())
    per_token = sum(kv.kv_bytes_per_token(facts, cache))
    assert per_token == per_token_bytes
    assert abs(allocated - per_token * settings.n_ctx) <= 0.005 * 1024 * 1024  # log prints MiB with 2 decimals
    assert allocated / settings.n_ctx == pytest.approx(per_token, rel=1e-3)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    return subprocess.run([sys.executable, "-m", "sovereign", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_doctor_cli_reports_no_gpu_clearly() -> None:
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    engines = {e["engine"]: e for e in report["engines"]}
    assert report["host"]["cpu"]["logical_cores"] >= 1 and report["host"]["ram_total"] > 0
    if not report["host"]["gpus"]:  # this machine: no NVIDIA driver
        assert report["gpu_summary"].startswith("No NVIDIA GPU found")
        assert not engines["vllm"]["runnable"] and engines["llamacpp"]["device"] == "cpu"
    table = run_cli("doctor")
    assert table.returncode == 0 and "Engines" in table.stdout and "vLLM" in table.stdout


def test_plan_cli_table_and_json() -> None:
    model = str(CONFIGS / "qwen3-4b")
    result = run_cli("plan", "--model", model, "--gpu", "rtx-4090-laptop", "--context", "131072", "--yarn", "4",
                     "--model-name", "Qwen/Qwen3-4B", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["recommended"]["engine"] == "vllm" and data["command"].startswith("vllm serve Qwen/Qwen3-4B")
    table = run_cli("plan", "--model", model, "--gpu-memory", "24GiB", "--compute-capability", "8.9",
                    "--context", "32768", "--concurrency", "4")
    assert table.returncode == 0, table.stderr
    assert "Recommended:" in table.stdout and "--max-num-seqs 4" in table.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--gpu-memory", "24 gigs"], "gpu_memory"),  # memory string that does not parse
        (["--gpu-memory", "24GiB", "--context", "131072"], "context"),  # beyond max_position_embeddings 40960
        (["--gpu", "voodoo-5"], "gpu"),  # unknown catalog GPU
        (["--gpu-memory", "24GiB", "--compute-capability", "eight"], "compute_capability"),
    ],
)
def test_plan_cli_bad_input_names_the_field(args: list[str], field: str) -> None:
    result = run_cli("plan", "--model", str(CONFIGS / "qwen3-4b"), *args)
    assert result.returncode == 1
    assert f"error: {field}" in result.stderr.replace("\n", " ") and "Traceback" not in result.stderr


def test_plan_cli_bad_config_and_unknown_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2}')  # incomplete
    result = run_cli("plan", "--model", str(tmp_path), "--gpu", "tesla-p4")
    assert result.returncode == 1 and "num_attention_heads" in result.stderr
    (tmp_path / "config.json").write_text('{"model_type": "mysterynet"}')  # unknown architecture
    result = run_cli("plan", "--model", str(tmp_path), "--gpu", "tesla-p4")
    assert result.returncode == 1 and "model_type" in result.stderr and "mysterynet" in result.stderr


def test_plan_cli_without_gpu_asks_for_memory() -> None:
    from sovereign.hardware.detect import detect_gpus

    if detect_gpus()[0]:
        pytest.skip("this host has a GPU")
    result = run_cli("plan", "--model", str(CONFIGS / "qwen3-4b"))
    assert result.returncode == 1 and "--gpu-memory" in result.stderr


@pytest.mark.anyio
async def test_system_route_is_admin_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from sovereign.server.app import create_app

    monkeypatch.setenv("TEST_USER_KEYS", "user-key")
    monkeypatch.setenv("TEST_ADMIN_KEYS", "admin-key")
    monkeypatch.setenv("SOVEREIGN_SERVER__API_KEYS_ENV", "TEST_USER_KEYS")
    monkeypatch.setenv("SOVEREIGN_SERVER__ADMIN_KEYS_ENV", "TEST_ADMIN_KEYS")
    app = create_app(load_settings())  # ASGITransport runs no lifespan: no model is loaded
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/v1/system")).status_code == 401
        denied = await client.get("/v1/system", headers={"Authorization": "Bearer user-key"})
        assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
        ok = await client.get("/v1/system", headers={"Authorization": "Bearer admin-key"})
    assert ok.status_code == 200
    body = ok.json()
    assert body["object"] == "system" and {e["engine"] for e in body["engines"]} >= {"vllm", "llamacpp", "sglang"}


@pytest.mark.gpu
def test_nvml_reports_the_gpu() -> None:
    from sovereign.hardware.detect import detect_gpus

    gpus, driver, cuda, error = detect_gpus()
    if not gpus:
        pytest.skip(f"no NVIDIA GPU: {error}")
    assert driver and cuda and gpus[0].memory_total > 0 and gpus[0].cc >= (3, 0)
