"""Flags gating real behaviour in a live gateway, the admin API, the CLI and the OpenFeature provider.

One ``sovereign serve`` (embedded engine, response cache on) with a flags file in which
``batch_inference`` is off and ``ai_inference`` serves ``off`` to the user ``blocked-user``.
Bad input tried: a blocked user (403 ``feature_disabled``), a RAG model with ``vector_search`` off
(403), ``flags set`` on an unknown flag (exit 1, 404 message), ``flags set`` with nothing to set,
a flag change making a cycle (400), ``flags check`` on a file with a cycle (exit 1), an unknown
flag and an integer evaluation through OpenFeature (default value with the error code).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from sovereign.flags.openfeature import SovereignProvider
from tests.conftest import LiveServer, start_server

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"
FLAGS = """
[flags.ai_inference]
rules = [{ attribute = "user", values = ["blocked-user"], serve = "off" }]
[flags.vector_search]
depends_on = ["ai_inference"]
[flags.semantic_cache]
depends_on = ["ai_inference"]
[flags.cost_optimization]
depends_on = ["ai_inference"]
[flags.batch_inference]
enabled = false
depends_on = ["ai_inference"]
[flags.triton_gpu_acceleration]
depends_on = ["ai_inference"]
[flags.advanced_monitoring]
[flags.prompt_version]
kind = "variant"
variants = { v1 = 1, v2 = 1 }
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("flags")
    (tmp / "flags.toml").write_text(FLAGS)
    server = start_server(tmp / "data", {
        "SOVEREIGN_FLAGS__FILE": str(tmp / "flags.toml"), "SOVEREIGN_FLAGS__SYNC_S": "0.2",
        "SOVEREIGN_ENGINE__N_CTX": "1024", "SOVEREIGN_ENGINE__N_PARALLEL": "4"})
    yield server
    server.stop()


@pytest.fixture
def client(gateway: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=60) as sdk:
        yield sdk


def cli(gateway: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sovereign", "flags", *args, "--url", gateway.url],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})


def chat(client: openai.OpenAI, content: str, **extra: object) -> openai.APIResponse:  # type: ignore[type-arg]
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=2, temperature=0, **extra)


def test_batch_inference_off_starts_the_engine_with_one_slot(gateway: LiveServer) -> None:
    rows = httpx.get(gateway.url + "/admin/backends").json()["deployments"]
    engine = next(r for r in rows if r["name"] == MODEL)
    assert engine["process"]["slots"] == 1  # engine.n_parallel = 4, lowered by the flag


def test_a_targeting_rule_turns_generation_off_for_one_user(client: openai.OpenAI) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        chat(client, "Hi", user="blocked-user")
    assert err.value.code == "feature_disabled" and "ai_inference" in err.value.message
    assert chat(client, "Hi", user="someone-else").http_response.status_code == 200


def test_semantic_cache_flag_turns_the_response_cache_off_and_on(gateway: LiveServer, client: openai.OpenAI) -> None:
    question = f"Cache me {time.time()}"
    assert chat(client, question).headers["x-sovereign-cache"] == "miss"
    assert chat(client, question).headers["x-sovereign-cache"] == "hit-exact"
    off = cli(gateway, "set", "semantic_cache", "--off")
    assert off.returncode == 0, off.stderr
    time.sleep(0.6)  # every worker re-reads flag values within flags.sync_s
    assert "x-sovereign-cache" not in chat(client, question).headers  # no lookup at all
    assert cli(gateway, "set", "semantic_cache", "--on").returncode == 0
    time.sleep(0.6)
    assert chat(client, question).headers["x-sovereign-cache"] == "hit-exact"


def test_cost_optimization_flag_decides_semantic_hits(gateway: LiveServer, client: openai.OpenAI) -> None:
    question = f"What is the capital city of France, asked at {int(time.time())}?"
    assert chat(client, question).headers["x-sovereign-cache"] == "miss"
    near = question.replace("What is", "What's")
    assert chat(client, near).headers["x-sovereign-cache"] == "hit-semantic"
    assert cli(gateway, "set", "cost_optimization", "--off").returncode == 0
    try:
        time.sleep(0.6)
        assert chat(client, near.replace("city", "city,")).headers["x-sovereign-cache"] == "miss"  # exact only
        assert chat(client, question).headers["x-sovereign-cache"] == "hit-exact"
    finally:
        assert cli(gateway, "set", "cost_optimization", "--on").returncode == 0


def test_dependants_switch_off_with_their_dependency(gateway: LiveServer) -> None:
    def evaluate(flag: str) -> dict:
        return httpx.post(f"{gateway.url}/v1/flags/{flag}/evaluate", json={"user": "u1"}).json()

    assert evaluate("semantic_cache")["enabled"] is True
    assert cli(gateway, "set", "ai_inference", "--off").returncode == 0
    try:
        time.sleep(0.6)
        assert evaluate("semantic_cache") == {"flag": "semantic_cache", "variant": "off", "enabled": False,
                                              "reason": "PREREQUISITE_FAILED"}
        assert evaluate("vector_search")["enabled"] is False
    finally:
        assert cli(gateway, "set", "ai_inference", "--on").returncode == 0
    time.sleep(0.6)
    assert evaluate("semantic_cache")["enabled"] is True


def test_vector_search_off_refuses_the_rag_models(gateway: LiveServer, client: openai.OpenAI) -> None:
    response = httpx.put(gateway.url + "/admin/flags/vector_search", json={"enabled": False})
    assert response.status_code == 200 and response.json()["enabled"] is False
    try:
        time.sleep(0.6)
        with pytest.raises(openai.PermissionDeniedError, match="vector_search"):
            client.chat.completions.create(model="sovereign-rag", messages=[{"role": "user", "content": "What?"}],
                                           max_tokens=2)
    finally:
        httpx.put(gateway.url + "/admin/flags/vector_search", json={"enabled": True})


def test_admin_api_and_cli_errors(gateway: LiveServer, tmp_path: Path) -> None:
    listed = cli(gateway, "list")
    assert listed.returncode == 0 and "prompt_version" in listed.stdout and "batch_inference" in listed.stdout
    unknown = cli(gateway, "set", "ghost", "--on")
    assert unknown.returncode == 1 and "ghost" in unknown.stderr
    assert cli(gateway, "set", "semantic_cache").returncode == 1  # nothing to set
    cycle = httpx.put(gateway.url + "/admin/flags/ai_inference", json={"depends_on": ["semantic_cache"]})
    assert cycle.status_code == 400 and "cycle" in cycle.json()["error"]["message"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"features": {"a": {"dependencies": ["b"]}, "b": {"dependencies": ["a"]}}}')
    checked = subprocess.run([sys.executable, "-m", "sovereign", "flags", "check", str(bad)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1 and "cycle" in checked.stderr
    got = httpx.get(gateway.url + "/admin/flags/semantic_cache").json()
    assert [e["kind"] for e in got["events"]][-2:] == ["flag_set", "flag_set"]  # the audit log


def test_openfeature_provider_evaluates_sovereign_flags(gateway: LiveServer) -> None:
    api.set_provider(SovereignProvider(gateway.url))
    try:
        client = api.get_client()
        ctx = EvaluationContext(targeting_key="user-42")
        assert client.get_boolean_value("semantic_cache", False, ctx) is True
        assert client.get_boolean_value("ai_inference", True, EvaluationContext(targeting_key="blocked-user")) is False
        variant = client.get_string_value("prompt_version", "none", ctx)
        assert variant in {"v1", "v2"}
        assert {client.get_string_value("prompt_version", "none", ctx) for _ in range(5)} == {variant}  # sticky
        details = client.get_boolean_details("ghost", True, ctx)
        assert details.value is True and details.error_code == ErrorCode.FLAG_NOT_FOUND
        assert client.get_integer_details("semantic_cache", 7, ctx).error_code == ErrorCode.TYPE_MISMATCH
    finally:
        api.shutdown()
