"""The contract every :class:`~sovereign.backends.base.ChatBackend` passes (engines, routes, plugins).

Use it by subclassing in a test module and providing an async ``backend`` fixture that yields a
started backend::

    class TestMyEngine(ChatBackendContract):
        @pytest.fixture(scope="class")
        async def backend(self):
            b = MyEngine(...); await b.start(); yield b; await b.close()

It asserts what an engine guarantees, never what a model happens to say: one final chunk with a
finish reason, usage within ``max_tokens``, context-window errors, early close, declared
capabilities honoured or refused with the documented error, and the optional Protocols
(:class:`~sovereign.backends.base.TokenCounting`, :class:`~sovereign.backends.base.HealthProbed`)
answering with the documented types. Tests are async (the module sets ``pytestmark = pytest.mark.anyio``).
"""

from __future__ import annotations

import pytest

from sovereign.backends.base import Capabilities, ChatBackend, HealthProbed, TokenCounting, collect
from sovereign.errors import ContextLengthExceededError, UnsupportedParameterError
from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest, SamplingParams


def chat_request(backend: ChatBackend, text: str = "Name one colour.", max_tokens: int = 4,
                 **sampling: object) -> GenerationRequest:
    """A greedy chat request to ``backend`` with one user message."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, **sampling)  # type: ignore[arg-type]
    return GenerationRequest(model=backend.name, sampling=params, messages=(ChatMessage("user", text),))


class ChatBackendContract:
    """Shared behaviour tests; subclasses supply the ``backend`` fixture (started)."""

    async def test_is_a_ready_chat_backend(self, backend: ChatBackend) -> None:
        assert isinstance(backend, ChatBackend)
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.capabilities, Capabilities) and backend.capabilities.context_window > 0
        assert backend.ready

    async def test_stream_ends_with_exactly_one_final_chunk(self, backend: ChatBackend) -> None:
        chunks: list[GenerationChunk] = [c async for c in backend.stream(chat_request(backend))]
        finals = [c for c in chunks if c.finish_reason is not None]
        assert len(finals) == 1 and chunks[-1] is finals[0]
        assert finals[0].finish_reason in ("stop", "length")
        usage = finals[0].usage
        assert usage.prompt_tokens > 0 and 1 <= usage.completion_tokens <= 4

    async def test_whole_answer_is_the_collected_stream(self, backend: ChatBackend) -> None:
        request = chat_request(backend, max_tokens=3)
        result = await collect(backend.stream(request))
        assert result.finish_reason in ("stop", "length")
        assert result.usage.completion_tokens <= 3
        if result.finish_reason == "length":
            assert result.usage.completion_tokens == 3

    async def test_prompt_tokens_grow_with_the_prompt(self, backend: ChatBackend) -> None:
        short = await backend.count_prompt_tokens(chat_request(backend, "Hi."))
        long = await backend.count_prompt_tokens(chat_request(backend, "Hi. " * 50))
        assert 0 < short < long

    async def test_output_budget_over_the_window_is_a_context_error(self, backend: ChatBackend) -> None:
        window = backend.capabilities.context_window
        with pytest.raises(ContextLengthExceededError):  # bad input: max_tokens larger than the window
            await collect(backend.stream(chat_request(backend, max_tokens=window + 1)))

    async def test_closing_the_stream_early_leaves_the_backend_usable(self, backend: ChatBackend) -> None:
        stream = backend.stream(chat_request(backend, max_tokens=16))
        first = await anext(stream)
        assert isinstance(first, GenerationChunk)
        await stream.aclose()  # type: ignore[attr-defined]
        result = await collect(backend.stream(chat_request(backend, max_tokens=2)))
        assert result.finish_reason in ("stop", "length")

    async def test_text_completions_served_or_refused_as_declared(self, backend: ChatBackend) -> None:
        request = GenerationRequest(model=backend.name, sampling=SamplingParams(max_tokens=2, temperature=0.0),
                                    prompt="The sky is")
        if backend.capabilities.completions:
            assert (await collect(backend.stream(request))).finish_reason in ("stop", "length")
        else:
            with pytest.raises(UnsupportedParameterError):
                await collect(backend.stream(request))

    async def test_optional_protocols_answer_with_documented_types(self, backend: ChatBackend) -> None:
        if isinstance(backend, TokenCounting):
            count = await backend.count_text_tokens("one two three four five six")
            assert isinstance(count, int) and count > 0
        if isinstance(backend, HealthProbed):
            latency = await backend.health()
            assert isinstance(latency, float) and latency >= 0.0
