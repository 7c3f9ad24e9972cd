"""The embedded engine (a managed llama-server) against the real SmolLM2-135M model.

llama.cpp's output differs between CPUs, so these tests assert what the engine guarantees (usage,
finish reasons, grammar-valid JSON on a stop, slots, restarts), never where the model stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from sovereign.backends.base import collect
from sovereign.backends.llama_process import command_line, find_binary
from sovereign.backends.managed import ManagedLlamaServer, default_model_path
from sovereign.config import EngineSettings
from sovereign.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    EngineUnavailableError,
    StreamInterruptedError,
)
from sovereign.observability import metrics
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio


def chat(text: str, **sampling: object) -> GenerationRequest:
    params = SamplingParams(**{"max_tokens": 16, "temperature": 0.0, **sampling})  # type: ignore[arg-type]
    return GenerationRequest(model="m", sampling=params, messages=(ChatMessage("user", text),))


@pytest.fixture
async def one_slot(engine_settings: EngineSettings) -> AsyncIterator[ManagedLlamaServer]:
    """An engine with one slot and one queue place: what waits and what is refused is visible."""
    backend = ManagedLlamaServer(engine_settings.model_copy(update={"n_parallel": 1, "max_queue": 1}))
    await backend.start()
    yield backend
    await backend.close()


async def slots_busy(engine: ManagedLlamaServer) -> int:
    async with httpx.AsyncClient() as client:
        slots = (await client.get(f"{engine.process.url}/slots")).json()
    return sum(1 for s in slots if s["is_processing"])


def test_default_model_comes_from_the_wheel() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_command_line_sizes_the_kv_cache_per_slot(engine_settings: EngineSettings) -> None:
    s = engine_settings.model_copy(update={"n_ctx": 1024, "n_parallel": 4, "cache_type_k": "q8_0",
                                           "extra_args": ["--mlock"]})
    argv = command_line(Path("/bin/llama-server"), Path("/m.gguf"), "smol", 8081, s)
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert flags["--ctx-size"] == "4096" and flags["--parallel"] == "4"  # every slot holds a full window
    assert flags["--host"] == "127.0.0.1" and flags["--alias"] == "smol" and flags["--cache-type-k"] == "q8_0"
    assert flags["--threads-http"] == str(4 + s.max_queue + 4)  # a waiting request holds an HTTP thread
    assert "--jinja" in argv and "--metrics" in argv and argv[-1] == "--mlock"


async def test_prompt_is_rendered_by_the_gguf_template_and_counted_exactly(llama: ManagedLlamaServer) -> None:
    rendered = (await llama._post("/apply-template", {"messages": [{"role": "user", "content": "Hello"}]}))["prompt"]
    # SmolLM2's template (ChatML) from tokenizer.chat_template in the GGUF
    assert "<|im_start|>user\nHello<|im_end|>" in str(rendered)
    assert str(rendered).endswith("<|im_start|>assistant\n")
    request = chat("What is the capital of France?", max_tokens=12)
    result = await collect(llama.stream(request))
    assert result.usage.prompt_tokens == await llama.count_prompt_tokens(request)  # the engine's own count
    assert 1 <= result.usage.completion_tokens <= 12
    assert result.finish_reason in ("stop", "length")
    if result.finish_reason == "length":
        assert result.usage.completion_tokens == 12


async def test_ignore_eos_generates_exactly_max_tokens(llama: ManagedLlamaServer) -> None:
    result = await collect(llama.stream(chat("Say hi.", max_tokens=40, ignore_eos=True)))
    assert result.usage.completion_tokens == 40
    assert result.finish_reason == "length"


async def test_stop_sequence_truncates_output(llama: ManagedLlamaServer) -> None:
    free = await collect(llama.stream(chat("Write about rivers.", max_tokens=30, ignore_eos=True)))
    words = free.text.split()
    assert len(words) >= 3, free.text
    stop = words[2]  # a string the model does produce here, whatever this CPU made it say
    stopped = await collect(llama.stream(chat("Write about rivers.", max_tokens=30, ignore_eos=True, stop=(stop,))))
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert stopped.usage.completion_tokens < 30


async def test_json_mode_is_grammar_valid_when_it_stops(llama: ManagedLlamaServer) -> None:
    result = await collect(
        llama.stream(chat("Give me a JSON object describing a dog with name and age.", max_tokens=80, json_mode=True))
    )
    if result.finish_reason == "stop":
        assert isinstance(json.loads(result.text), dict)
    else:  # cut by max_tokens: a length stop, never a stop with broken JSON
        assert result.finish_reason == "length" and result.usage.completion_tokens == 80
    assert result.text.lstrip().startswith("{")  # the grammar allows nothing else first


async def test_context_window_is_enforced_with_real_token_counts(llama: ManagedLlamaServer) -> None:
    prompt_tokens = await llama.count_prompt_tokens(chat("hello"))
    window = llama.settings.n_ctx
    # bad input: prompt + max_tokens one past the window, then a prompt longer than the window
    with pytest.raises(ContextLengthExceededError) as info:
        await collect(llama.stream(chat("hello", max_tokens=window - prompt_tokens + 1)))
    assert info.value.status_code == 400
    exact_fit = llama.stream(chat("hello", max_tokens=window - prompt_tokens, ignore_eos=True))
    assert (await anext(exact_fit)).text  # accepted: it fits to the token
    await exact_fit.aclose()
    with pytest.raises(ContextLengthExceededError):
        await collect(llama.stream(chat("word " * 1100)))


async def test_concurrent_streams_are_decoded_together(llama: ManagedLlamaServer) -> None:
    """8 streams on 8 slots: every stream's generation window overlaps every other's (continuous
    batching), which a first-come-first-served engine cannot do; usage is right for each."""
    loop = asyncio.get_running_loop()

    async def one(i: int) -> tuple[float, float, int, int]:
        request = chat(f"Tell me about the number {i}.", max_tokens=24, ignore_eos=True)
        first = last = 0.0
        usage = None
        async for chunk in llama.stream(request):
            if chunk.text:
                first = first or loop.time()
                last = loop.time()
            usage = chunk.usage
        assert usage is not None
        return first, last, usage.completion_tokens, usage.prompt_tokens - await llama.count_prompt_tokens(request)

    results = await asyncio.gather(*(one(i) for i in range(8)))
    assert all(tokens == 24 and prompt_delta == 0 for _, _, tokens, prompt_delta in results)
    assert max(first for first, *_ in results) < min(last for _, last, *_ in results)


async def test_closing_a_stream_frees_its_slot(one_slot: ManagedLlamaServer) -> None:
    stream = one_slot.stream(chat("Write a very long essay about the sea.", max_tokens=900, ignore_eos=True))
    got = 0
    async for _chunk in stream:
        got += 1
        if got == 3:
            break
    assert await slots_busy(one_slot) == 1
    await stream.aclose()
    for _ in range(100):
        if await slots_busy(one_slot) == 0:
            break
        await asyncio.sleep(0.05)
    assert await slots_busy(one_slot) == 0  # 900 tokens would keep it busy for seconds
    result = await collect(one_slot.stream(chat("Hi", max_tokens=4)))
    assert result.usage.completion_tokens >= 1


async def test_queue_limit_rejects_with_overloaded(one_slot: ManagedLlamaServer) -> None:
    long = one_slot.stream(chat("Write a long essay.", max_tokens=300, ignore_eos=True))
    await anext(long)  # decoding in the only slot
    waiting = one_slot.stream(chat("Hi", max_tokens=2))
    waiting_task = asyncio.create_task(anext(waiting))  # the one queue place
    await asyncio.sleep(0.2)
    with pytest.raises(EngineOverloadedError) as info:  # bad input: a third request past slots + queue
        await anext(one_slot.stream(chat("Hi", max_tokens=2)))
    assert info.value.status_code == 503 and info.value.code == "engine_overloaded"
    await long.aclose()
    assert (await waiting_task).text is not None
    await waiting.aclose()


async def test_a_killed_engine_is_restarted_and_waiting_requests_succeed(one_slot: ManagedLlamaServer) -> None:
    restarts = metrics.ENGINE_RESTARTS.labels(engine=one_slot.name)._value.get()
    started = one_slot.stream(chat("Write a long essay.", max_tokens=400, ignore_eos=True))
    await anext(started)
    pid = one_slot.info().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StreamInterruptedError) as info:  # the stream had started: it ends with an error
        async for _chunk in started:
            pass
    assert info.value.code == "engine_stream_interrupted"
    # a request sent while the engine is down waits for the restart, then succeeds
    result = await collect(one_slot.stream(chat("Hi", max_tokens=4, ignore_eos=True)))
    assert result.usage.completion_tokens == 4
    assert one_slot.info().restarts == 1 and one_slot.info().pid not in (None, pid)
    assert metrics.ENGINE_RESTARTS.labels(engine=one_slot.name)._value.get() == restarts + 1
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_close_leaves_no_engine_process(engine_settings: EngineSettings) -> None:
    backend = ManagedLlamaServer(engine_settings)
    await backend.start()
    pid = backend.info().pid
    assert pid is not None and psutil.Process(pid).name().startswith("llama-server")
    # idle OpenMP threads sleep soon, so engines sharing cores do not spin each other down
    assert psutil.Process(pid).environ()["GOMP_SPINCOUNT"] == "1000"
    await backend.close()
    assert not psutil.pid_exists(pid)
    assert not backend.ready


async def test_missing_model_or_binary_is_a_clear_error(engine_settings: EngineSettings, tmp_path: Path) -> None:
    # bad input: a GGUF path that does not exist, then a llama-server path that does not exist
    backend = ManagedLlamaServer(engine_settings.model_copy(update={"model_path": tmp_path / "nope.gguf"}))
    with pytest.raises(EngineUnavailableError, match="does not exist"):
        await backend.start()
    with pytest.raises(EngineUnavailableError, match="not loaded"):
        await collect(backend.stream(chat("x")))
    await backend.close()
    with pytest.raises(EngineUnavailableError, match=r"scripts/setup\.sh"):
        find_binary(tmp_path / "llama-server")


async def test_a_model_llama_server_cannot_load_fails_start_with_its_log(
    engine_settings: EngineSettings, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # bad input: a truncated GGUF
    backend = ManagedLlamaServer(engine_settings.model_copy(update={"model_path": bad, "start_timeout_s": 30}))
    with pytest.raises(EngineUnavailableError, match="did not become healthy") as info:
        await backend.start()
    assert "Last log lines" in info.value.message
    await backend.close()


async def test_health_and_token_counts_answer_while_requests_wait_for_a_slot(engine_settings: EngineSettings) -> None:
    """A full queue (every admitted request waiting for the one slot) leaves the engine able to answer
    /health, /apply-template and /tokenize, which the gateway needs to admit and probe."""
    backend = ManagedLlamaServer(engine_settings.model_copy(update={"n_parallel": 1, "max_queue": 8}))
    await backend.start()
    streams = [backend.stream(chat(f"Write a long essay number {i}.", max_tokens=300, ignore_eos=True))
               for i in range(9)]
    tasks = [asyncio.create_task(anext(s)) for s in streams]  # 1 decoding + 8 waiting for the slot
    try:
        await asyncio.sleep(1.0)
        async with asyncio.timeout(5):
            assert await backend.health() < 5
            assert await backend.count_prompt_tokens(chat("Hi")) > 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        await backend.close()
