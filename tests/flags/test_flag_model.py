"""Flags: the file shapes, load-time checks, MurmurHash3 bucketing and evaluation order.

Bad input tried: a dependency cycle (a -> b -> a, and a flag depending on itself), a dependency on
an unknown flag, a duplicate name, a percentage of 150, variant weights summing to 0, a rule on an
unknown attribute, malformed JSON and TOML, a JSON file without ``features``, a missing file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mmh3
import pytest

from sovereign.errors import ConfigError, NotFoundError
from sovereign.flags.bucketing import BUCKETS, bucket, within
from sovereign.flags.evaluation import EvaluationContext, evaluate
from sovereign.flags.model import BUILTIN_FLAGS, Flag, check_flags, load_flags_file
from tests.conftest import ROOT

SEED = ROOT / "deploy" / "feature-flags.json"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_seed_file_loads_with_its_seven_flags_and_dependencies() -> None:
    flags = load_flags_file(SEED)
    assert set(flags) == {"ai_inference", "vector_search", "semantic_cache", "triton_gpu_acceleration",
                          "batch_inference", "cost_optimization", "advanced_monitoring"}
    for name in ("vector_search", "semantic_cache", "triton_gpu_acceleration", "batch_inference", "cost_optimization"):
        assert flags[name].depends_on == ["ai_inference"]
    assert flags["cost_optimization"].kind == "percentage" and flags["cost_optimization"].percentage == 50
    assert "rollout_strategy" in flags["advanced_monitoring"].metadata  # seed-only keys are kept, not lost


def test_toml_shape_with_rules_and_variants(tmp_path: Path) -> None:
    path = write(tmp_path, "flags.toml", """
[flags.base]
[flags.prompt]
kind = "variant"
variants = { v1 = 1, v2 = 3 }
depends_on = ["base"]
rules = [{ attribute = "tenant", values = ["lab"], serve = "v2" }]
""")
    flags = load_flags_file(path)
    assert flags["prompt"].variants == {"v1": 1, "v2": 3} and flags["prompt"].rules[0].serve == "v2"


def test_builtin_flags_are_all_on_without_a_file() -> None:
    flags = load_flags_file(None)
    assert [f.name for f in BUILTIN_FLAGS] == list(flags)
    assert all(evaluate(flags, name, EvaluationContext(user="u")).enabled for name in flags)


@pytest.mark.parametrize(("text", "message"), [
    ('{"features": {"a": {"dependencies": ["b"]}, "b": {"dependencies": ["a"]}}}', "cycle"),
    ('{"features": {"a": {"dependencies": ["a"]}}}', "cycle"),
    ('{"features": {"a": {"dependencies": ["ghost"]}}}', "unknown flag(s) 'ghost'"),
    ('{"features": [{"name": "a"}, {"name": "a"}]}', "defined twice"),
    ('{"features": {"a": {"rollout_percentage": 150}}}', "percentage"),
    ('{"features": {"a": {"enabled": true}}, "x": 1', "not valid JSON"),
    ('{"flags_typo": {}}', "expected a [flags.NAME] table"),
])
def test_bad_json_files_are_clear_load_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"flags\.json") as err:
        load_flags_file(write(tmp_path, "flags.json", text))
    assert message in err.value.message


@pytest.mark.parametrize(("text", "message"), [
    ('[flags.a]\nkind = "variant"\nvariants = { x = 0 }\n', "positive total weight"),
    ('[flags.a]\nrules = [{ attribute = "ip", values = ["1"] }]\n', "rules.0.attribute"),
    ("[flags.a\n", "not valid TOML"),
])
def test_bad_toml_files_are_clear_load_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_flags_file(write(tmp_path, "flags.toml", text))
    assert message in err.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read the flags file"):
        load_flags_file(tmp_path / "nope.toml")


# -- bucketing ------------------------------------------------------------------------------------


def test_bucket_is_murmur3_x86_32_seed_0_of_salt_colon_subject() -> None:
    # the reference value of MurmurHash3_x86_32("hello", seed 0) is 0x248bfa47 (SMHasher)
    assert mmh3.hash("hello", 0, signed=False) == 0x248BFA47
    assert bucket("flag", "user-1") == mmh3.hash("flag:user-1", 0, signed=False) % BUCKETS


def test_buckets_are_sticky_uniform_and_monotone() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    assert [bucket("f", u) for u in users[:50]] == [bucket("f", u) for u in users[:50]]
    share = sum(within("f", u, 10) for u in users) / len(users)
    assert 0.09 < share < 0.11
    inside_10 = {u for u in users if within("f", u, 10)}
    inside_25 = {u for u in users if within("f", u, 25)}
    assert inside_10 <= inside_25  # a user in the canary stays in it as the percent grows
    assert {u for u in users if within("g", u, 10)} != inside_10  # another salt, another split


# -- evaluation -------------------------------------------------------------------------------------


def flagset(*flags: Flag) -> dict[str, Flag]:
    return check_flags(flags)


def test_evaluation_order_disabled_dependency_rule_split() -> None:
    flags = flagset(
        Flag(name="root"), Flag(name="child", depends_on=["root"], kind="percentage", percentage=0,
                                rules=[{"attribute": "header:x-team", "values": ["ml"]}]),
    )
    ml = EvaluationContext(user="u1", headers={"x-team": "ml"})
    assert evaluate(flags, "child", ml).reason == "TARGETING_MATCH" and evaluate(flags, "child", ml).enabled
    assert evaluate(flags, "child", EvaluationContext(user="u1")).reason == "SPLIT"  # 0 %: off
    assert not evaluate(flags, "child", EvaluationContext(user="u1")).enabled
    off_root = flagset(Flag(name="root", enabled=False), flags["child"])
    result = evaluate(off_root, "child", ml)
    assert (result.enabled, result.reason) == (False, "PREREQUISITE_FAILED")  # dependants switch off
    assert evaluate(off_root, "root", ml).reason == "DISABLED"
    with pytest.raises(NotFoundError):
        evaluate(flags, "ghost", ml)


def test_variants_follow_their_weights_and_stick() -> None:
    flags = flagset(Flag(name="prompt", kind="variant", variants={"v1": 1, "v2": 3, "never": 0}))
    seen = Counter(evaluate(flags, "prompt", EvaluationContext(user=f"u{i}")).variant for i in range(8000))
    assert seen["never"] == 0 and 0.22 < seen["v1"] / 8000 < 0.28
    assert {evaluate(flags, "prompt", EvaluationContext(api_key="key-3")).variant for _ in range(20)} == {
        evaluate(flags, "prompt", EvaluationContext(api_key="key-3")).variant}


def test_subject_is_user_then_key_then_tenant() -> None:
    assert EvaluationContext(user="u", api_key="k", tenant="t").subject == "u"
    assert EvaluationContext(api_key="k", tenant="t").subject == "k"
    assert EvaluationContext(tenant="t").subject == "t"
    assert json.dumps(EvaluationContext().subject) == "null"
