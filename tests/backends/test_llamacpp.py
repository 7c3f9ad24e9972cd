"""The embedded llama.cpp engine against the real SmolLM2-135M model."""

from __future__ import annotations

import asyncio
import json

import pytest

from sovereign.backends.base import collect
from sovereign.backends.llamacpp import LlamaCppBackend, _StopMatcher, default_model_path
from sovereign.config import EngineSettings
from sovereign.errors import ContextLengthExceededError, EngineUnavailableError
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio


def chat(text: str, **sampling: object) -> GenerationRequest:
    params = SamplingParams(**{"max_tokens": 16, "temperature": 0.0, **sampling})  # type: ignore[arg-type]
    return GenerationRequest(model="m", sampling=params, messages=(ChatMessage("user", text),))


def test_default_model_comes_from_the_wheel() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


async def test_chat_template_from_gguf_metadata(llama: LlamaCppBackend) -> None:
    tokens = llama.prompt_tokens(chat("Hello"))
    text = llama._llm.detokenize(tokens, special=True).decode()
    # SmolLM2's template (ChatML) from tokenizer.chat_template in the GGUF
    assert "<|im_start|>user\nHello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert await llama.count_prompt_tokens(chat("Hello")) == len(tokens)


async def test_greedy_generation_is_deterministic_and_counts_tokens(llama: LlamaCppBackend) -> None:
    first = await collect(llama.stream(chat("What is the capital of France?", max_tokens=12)))
    second = await collect(llama.stream(chat("What is the capital of France?", max_tokens=12)))
    assert first.text == second.text
    assert first.text.strip()
    assert first.usage.prompt_tokens == len(llama.prompt_tokens(chat("What is the capital of France?")))
    assert 1 <= first.usage.completion_tokens <= 12
    if first.finish_reason == "length":
        assert first.usage.completion_tokens == 12


async def test_seed_makes_sampling_reproducible(llama: LlamaCppBackend) -> None:
    req = chat("Tell me a story about a cat.", temperature=1.0, seed=42, max_tokens=20)
    a = await collect(llama.stream(req))
    b = await collect(llama.stream(req))
    assert a.text == b.text


async def test_ignore_eos_generates_exactly_max_tokens(llama: LlamaCppBackend) -> None:
    result = await collect(llama.stream(chat("Say hi.", max_tokens=40, ignore_eos=True)))
    assert result.usage.completion_tokens == 40
    assert result.finish_reason == "length"


async def test_stop_sequence_truncates_output(llama: LlamaCppBackend) -> None:
    free = await collect(llama.stream(chat("Count from 1 to 10 separated by commas.", max_tokens=30)))
    assert "3" in free.text, free.text  # the model does count here; the stop must cut before "3"
    stopped = await collect(llama.stream(chat("Count from 1 to 10 separated by commas.", max_tokens=30, stop=("3",))))
    assert stopped.finish_reason == "stop"
    assert "3" not in stopped.text
    assert free.text.startswith(stopped.text)


async def test_json_mode_output_parses(llama: LlamaCppBackend) -> None:
    result = await collect(
        llama.stream(chat("Give me a JSON object describing a dog with name and age.", max_tokens=60, json_mode=True))
    )
    assert result.finish_reason == "stop", result.text
    assert isinstance(json.loads(result.text), dict)


async def test_context_window_is_enforced_with_real_token_counts(llama: LlamaCppBackend) -> None:
    prompt_tokens = len(llama.prompt_tokens(chat("hello")))
    with pytest.raises(ContextLengthExceededError) as info:
        await collect(llama.stream(chat("hello", max_tokens=1024 - prompt_tokens + 1)))
    assert info.value.status_code == 400
    ok = await collect(llama.stream(chat("hello", max_tokens=1024 - prompt_tokens)))
    assert ok.usage.completion_tokens >= 1
    with pytest.raises(ContextLengthExceededError):
        await collect(llama.stream(chat("word " * 1100)))


async def test_concurrent_requests_all_complete_in_fifo_order(llama: LlamaCppBackend) -> None:
    finished: list[int] = []

    async def one(i: int) -> str:
        result = await collect(llama.stream(chat(f"Say the number {i}.", max_tokens=8, ignore_eos=True)))
        finished.append(i)
        return result.text

    results = await asyncio.gather(*(one(i) for i in range(6)))
    assert all(results)
    assert finished == list(range(6))  # one engine, first come first served


async def test_closing_a_stream_stops_generation_and_frees_the_engine(llama: LlamaCppBackend) -> None:
    stream = llama.stream(chat("Write a very long essay about the sea.", max_tokens=900, ignore_eos=True))
    got = 0
    async for _chunk in stream:
        got += 1
        if got == 3:
            break
    await stream.aclose()
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await collect(llama.stream(chat("Hi", max_tokens=4)))
    assert result.usage.completion_tokens >= 1
    # 900 tokens would take many seconds; the freed engine answers the next request at once
    assert loop.time() - started < 5.0


async def test_queue_limit_rejects_with_overloaded(engine_settings: EngineSettings) -> None:
    from sovereign.errors import EngineOverloadedError

    backend = LlamaCppBackend(engine_settings.model_copy(update={"max_queue": 1}))
    await backend.start()
    try:
        long = backend.stream(chat("Write a long essay.", max_tokens=200, ignore_eos=True))
        await anext(long)  # running
        waiting = backend.stream(chat("Hi", max_tokens=2))
        waiting_task = asyncio.create_task(anext(waiting))
        await asyncio.sleep(0.05)
        with pytest.raises(EngineOverloadedError):
            await anext(backend.stream(chat("Hi", max_tokens=2)))
        await long.aclose()
        await waiting_task
        await waiting.aclose()
    finally:
        await backend.close()


async def test_missing_model_file_is_a_clear_error(engine_settings: EngineSettings, tmp_path) -> None:
    backend = LlamaCppBackend(engine_settings.model_copy(update={"model_path": tmp_path / "nope.gguf"}))
    with pytest.raises(EngineUnavailableError, match="does not exist"):
        await backend.start()
    with pytest.raises(EngineUnavailableError, match="not loaded"):
        await backend.count_prompt_tokens(chat("x"))


def test_stop_matcher_holds_back_partial_stop_strings() -> None:
    matcher = _StopMatcher(("END",))
    assert matcher.feed("hello E") == ("hello ", False)
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("X more") == ("ENX more", False)
    assert matcher.feed(" the END of it") == (" the ", True)
    assert _StopMatcher(()).feed("abc") == ("abc", False)
