"""The planner on catalog GPUs: Tesla P4 (8 GiB, cc 6.1) and RTX 4090 Laptop (16 GiB, cc 8.9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovereign.errors import ContextLengthExceededError, InvalidRequestError
from sovereign.hardware.engines import evaluate
from sovereign.hardware.gpus import find_spec, require_spec
from sovereign.hardware.model import read_model
from sovereign.hardware.planner import GpuTarget, plan

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "model_configs"
YARN = {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}


def target(key: str) -> GpuTarget:
    s = require_spec(key)
    return GpuTarget(s.name, s.memory, s.compute_capability, s.bandwidth, s.source)


def test_vllm_cannot_run_on_pascal() -> None:
    verdicts = {v.engine: v for v in evaluate(system="Linux", gpu=("Tesla P4", "6.1"))}
    assert not verdicts["vllm"].runnable and "7.0" in verdicts["vllm"].reason
    assert not verdicts["sglang"].runnable and verdicts["llamacpp"].runnable and verdicts["ollama"].runnable
    assert all(v.source for v in verdicts.values())
    none = {v.engine: v for v in evaluate(system="Linux", gpu=None)}
    assert none["llamacpp"].device == "cpu" and not none["vllm"].runnable


def test_catalog_matches_nvml_names() -> None:
    assert find_spec("NVIDIA GeForce RTX 4090 Laptop GPU").key == "rtx-4090-laptop"  # type: ignore[union-attr]
    assert find_spec("NVIDIA GeForce RTX 4090").key == "rtx-4090"  # type: ignore[union-attr]
    assert find_spec("NVIDIA H100 80GB HBM3").key == "h100-sxm"  # type: ignore[union-attr]
    with pytest.raises(InvalidRequestError, match="tesla-p4"):
        require_spec("voodoo-5")


def test_qwen3_4b_128k_on_rtx_4090_laptop() -> None:
    facts = read_model(CONFIGS / "qwen3-4b", overrides=YARN)
    assert facts.max_context == 131072
    p = plan(facts, target("rtx-4090-laptop"), context=131072, model_ref="Qwen/Qwen3-4B", yarn_requested=True)
    rec = p.recommended
    assert rec is not None and rec.fits and (rec.engine, rec.weights, rec.cache) == ("vllm", "fp8", "fp8")
    assert rec.kv_bytes_needed == 131072 * 73_728  # fp8: 2 x 36 x 8 x 128 x 1 byte per token
    assert "--max-model-len 131072" in p.command and "--kv-cache-dtype fp8" in p.command
    assert '"original_max_position_embeddings": 32768' in p.command
    # bf16 weights + bf16 KV needs 18 GiB of cache alone: does not fit
    first = p.options[0]
    assert (first.weights, first.cache, first.fits) == ("bf16", "bf16", False)
    assert rec.decode_tps_single == pytest.approx(576e9 / (facts.n_params - 0 + rec.kv_bytes_needed), rel=0.01)


def test_qwen3_4b_128k_on_tesla_p4_needs_llamacpp_and_partial_offload() -> None:
    facts = read_model(CONFIGS / "qwen3-4b", overrides=YARN)
    p = plan(facts, target("tesla-p4"), context=131072, yarn_requested=True)
    assert {o.engine for o in p.options} == {"llamacpp"}  # vLLM / SGLang need cc >= 7.0 / 7.5
    assert not any(o.fits for o in p.options)
    rec = p.recommended
    assert rec is not None and 0 < rec.gpu_layers < 36
    assert p.command.startswith("llama-server") and f"-ngl {rec.gpu_layers}" in p.command
    assert "--cache-type-v q4_0" in p.command and "-fa on" in p.command and "--rope-scaling yarn" in p.command
    # at 32K the same card holds the whole model with a q8_0 cache
    p32 = plan(read_model(CONFIGS / "qwen3-4b"), target("tesla-p4"), context=32768)
    assert p32.recommended is not None and p32.recommended.fits


def test_max_context_and_concurrency_are_consistent() -> None:
    facts = read_model(CONFIGS / "llama-3.1-8b")
    gpu = GpuTarget("A", 80 * 1024**3, "9.0", 3.35e12, "test")
    p = plan(facts, gpu, context=8192, concurrency=8, engine="vllm")
    o = p.options[0]
    assert o.fits and o.max_concurrency_at_context >= 8
    used = o.kv_bytes_per_token * o.max_context_at_concurrency * 8
    assert used <= o.kv_budget_bytes or o.max_context_at_concurrency == 131072
    assert "--max-num-seqs 8" in p.command


def test_context_beyond_model_maximum_is_an_error() -> None:
    facts = read_model(CONFIGS / "qwen3-4b")  # no YaRN: 40,960 tokens
    with pytest.raises(ContextLengthExceededError) as err:
        plan(facts, target("rtx-4090-laptop"), context=131072)
    assert err.value.param == "context" and "40960" in err.value.message and "--yarn" in err.value.message
    with pytest.raises(InvalidRequestError, match="kv_cache"):
        plan(facts, target("rtx-4090-laptop"), context=1024, cache="int3")


def test_bad_numbers_name_their_field_and_unservable_caches_are_explained() -> None:
    facts = read_model(CONFIGS / "qwen3-4b")
    for field, kwargs in (("concurrency", {"context": 4096, "concurrency": 0}), ("context", {"context": -1})):
        with pytest.raises(InvalidRequestError) as err:
            plan(facts, target("rtx-4090-laptop"), **kwargs)
        assert err.value.param == field and field in err.value.message
    # bad input: a KV cache type vLLM and SGLang do not offer; llama.cpp still plans it, with a note
    p = plan(facts, target("rtx-4090-laptop"), context=8192, cache="q4_0")
    assert p.recommended is not None and p.recommended.engine == "llamacpp"
    assert any(n.startswith("vllm skipped: it has no q4_0 KV cache") for n in p.notes)
