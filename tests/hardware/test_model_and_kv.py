"""Model reader and KV math against committed config.json files of published models.

Expected numbers: parameter counts are the published totals (Qwen3-4B 4,022,468,096; Llama-3.1-8B
8,030,261,248; Mistral-7B-v0.3 7,248,023,552; Phi-3-mini 3,821,079,552; Gemma-2-2B 2,614,341,888; the
safetensors index / model cards), KV bytes per token is 2 x layers x kv_heads x head_dim x 2 (bf16).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovereign.backends.managed import default_model_path
from sovereign.errors import InvalidRequestError
from sovereign.hardware import kv
from sovereign.hardware.model import read_model
from sovereign.hardware.sizes import GiB, parse_bandwidth, parse_bytes

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "model_configs"

# name: (params, layers, kv_heads, head_dim, kv bf16 bytes/token over all layers, max context)
EXPECTED = {
    "qwen3-4b": (4_022_468_096, 36, 8, 128, 2 * 36 * 8 * 128 * 2, 40960),
    "llama-3.1-8b": (8_030_261_248, 32, 8, 128, 2 * 32 * 8 * 128 * 2, 131072),
    "mistral-7b-v0.3": (7_248_023_552, 32, 8, 128, 2 * 32 * 8 * 128 * 2, 32768),
    "phi-3-mini-4k-instruct": (3_821_079_552, 32, 32, 96, 2 * 32 * 32 * 96 * 2, 4096),
    "gemma-2-2b-it": (2_614_341_888, 26, 4, 256, 2 * 26 * 4 * 256 * 2, 8192),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_configs(name: str) -> None:
    params, layers, kv_heads, head_dim, kv_token, ctx = EXPECTED[name]
    facts = read_model(CONFIGS / name)
    assert (facts.n_params, facts.n_layers, facts.n_kv_heads, facts.head_dim, facts.max_context) == (
        params, layers, kv_heads, head_dim, ctx)
    full, sliding = kv.kv_bytes_per_token(facts, "bf16")
    assert full + sliding == kv_token


def test_qwen3_head_dim_is_read_not_derived() -> None:
    facts = read_model(CONFIGS / "qwen3-4b" / "config.json")
    assert facts.head_dim_explicit and facts.head_dim == 128 != facts.hidden_size // facts.n_heads  # 80
    assert facts.attention == "GQA (32:8)"
    assert sum(kv.kv_bytes_per_token(facts, "bf16")) == 147_456  # 144 KiB per token


def test_gemma2_alternating_sliding_window() -> None:
    facts = read_model(CONFIGS / "gemma-2-2b-it")
    assert facts.layer_kinds[:4] == ["sliding", "full", "sliding", "full"]
    assert (facts.n_sliding, facts.n_full, facts.sliding_window) == (13, 13, 4096)
    per_layer = 2 * 4 * 256 * 2
    # 8192 tokens: 13 global layers hold 8192, 13 local layers only the 4096-token window
    assert kv.kv_bytes_for_sequence(facts, "bf16", 8192) == 13 * per_layer * 8192 + 13 * per_layer * 4096
    assert kv.kv_bytes_for_sequence(facts, "bf16", 1000) == 26 * per_layer * 1000
    budget = kv.kv_bytes_for_sequence(facts, "bf16", 6000)
    assert kv.max_tokens_for_budget(facts, "bf16", budget, 1) == 6000


def test_phi3_mha_and_uniform_window_is_planned_as_full() -> None:
    facts = read_model(CONFIGS / "phi-3-mini-4k-instruct")
    assert facts.attention == "MHA" and facts.sliding_window == 2047 and facts.n_sliding == 0
    assert any("2047" in n for n in facts.notes)


def test_cache_types_and_quantized_sizes() -> None:
    facts = read_model(CONFIGS / "llama-3.1-8b")
    assert sum(kv.kv_bytes_per_token(facts, "fp8")) == 65_536
    assert sum(kv.kv_bytes_per_token(facts, "q8_0")) == 131_072 * 34 / 32 / 2  # 34 B per 32 values
    assert sum(kv.kv_bytes_per_token(facts, "q4_0")) == 131_072 * 18 / 32 / 2
    assert kv.weights_bytes(facts, None) == (8_030_261_248 * 2, "bf16")


def test_smollm2_gguf_metadata() -> None:
    facts = read_model(default_model_path())
    assert facts.source == "gguf" and facts.architecture == "llama"
    assert (facts.n_layers, facts.n_heads, facts.n_kv_heads, facts.head_dim, facts.hidden_size) == (30, 9, 3, 64, 576)
    assert facts.n_params == 134_515_008 and facts.weight_dtype == "Q4_1" and facts.tied_embeddings
    assert facts.max_context == 8192 and facts.vocab_size == 49152
    assert sum(kv.kv_bytes_per_token(facts, "fp16")) == 2 * 30 * 3 * 64 * 2  # 23,040


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda c: c.pop("num_hidden_layers"), "num_hidden_layers"),  # incomplete config
        (lambda c: c.update(num_key_value_heads="eight"), "num_key_value_heads"),  # wrong type
        (lambda c: c.update(model_type="mysterynet"), "model_type"),  # unknown architecture
        (lambda c: c.update(num_key_value_heads=5), "num_key_value_heads"),  # 5 does not divide 32 heads
    ],
)
def test_bad_configs_name_the_field(tmp_path: Path, mutate: object, field: str) -> None:
    cfg = json.loads((CONFIGS / "qwen3-4b" / "config.json").read_text())
    mutate(cfg)  # type: ignore[operator]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidRequestError) as err:
        read_model(tmp_path)
    assert err.value.param == field and field in err.value.message


def test_malformed_json_and_missing_path(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{ not json")
    with pytest.raises(InvalidRequestError, match="not a readable JSON"):
        read_model(bad)
    with pytest.raises(InvalidRequestError, match="does not exist"):
        read_model(tmp_path / "nowhere")


def test_sizes_parse() -> None:
    assert parse_bytes("24GiB") == 24 * GiB and parse_bytes("16 GB") == 16 * 10**9 and parse_bytes("512") == 512
    assert parse_bandwidth("576GB/s") == 576e9
    for bad in ("24 gigs", "GiB", "", "-1GiB", "0"):
        with pytest.raises(InvalidRequestError) as err:
            parse_bytes(bad)
        assert err.value.param == "gpu_memory"


@pytest.mark.parametrize(
    ("fixture", "model", "avx2", "avx512", "neon", "flags"),
    [
        ("xeon-avx512.txt", "Intel(R) Xeon(R) Platinum 8358 CPU @ 2.60GHz", True, True, False,
         {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}),
        ("graviton3-neon.txt", None, False, False, True, {"asimd", "asimddp", "sve", "i8mm"}),
    ],
)
def test_cpu_instruction_sets_from_cpuinfo(
    fixture: str, model: str | None, avx2: bool, avx512: bool, neon: bool, flags: set[str]
) -> None:
    from sovereign.hardware.detect import detect_cpu

    cpu = detect_cpu(Path(__file__).resolve().parent.parent / "fixtures" / "cpuinfo" / fixture)
    assert (cpu.avx2, cpu.avx512, cpu.neon) == (avx2, avx512, neon)
    assert flags <= set(cpu.flags)
    assert ("avx512f" in cpu.flags) == avx512
    if model is not None:
        assert cpu.model == model
