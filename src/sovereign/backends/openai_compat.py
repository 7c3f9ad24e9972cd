"""One backend for every OpenAI-compatible engine: vLLM, SGLang, llama.cpp server, llama-cpp-python,
Ollama's ``/v1``, TGI's Messages API, Triton's OpenAI frontend (and any other ``/v1`` server).

All request/response translation for these engines lives here: the domain request becomes a
streaming ``/v1/chat/completions`` (or ``/v1/completions``) body, the SSE answer becomes
:class:`~sovereign.types.GenerationChunk` objects, and every HTTP or transport failure becomes a
:mod:`sovereign.errors` class in :func:`translate_transport_error` / :func:`translate_status`
(the one place, ``raise ... from exc``). The engines differ in a few ways, captured per kind in
:data:`PROFILES` and tabulated in ``docs/engines.md``: the tokenize endpoint, the health path,
and which parameters they honour. A parameter the target cannot honour is a 400
``unsupported_parameter``, never silently dropped.

Upstream requests stream (one generation path; non-streaming clients get the stream collected,
and a hung engine is caught by the first-token timeout for them too), unless ``json_upstream`` is
on for the deployment (its setting, else the profile's default): then non-streaming client
requests go upstream as plain JSON, at the price of only the total timeout for those requests.
It is on by default for llama-cpp-python, whose server streams a short answer more slowly than it
answers it as JSON (``bench/routing_bench.py``: +7.6 ms streamed upstream vs +3.5 ms as JSON).

``base_url`` is the OpenAI base URL (``http://host:port/v1``); engine-native endpoints (tokenize,
health) hang off its root (the URL without the trailing ``/v1``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
from cachetools import LRUCache
from httpx_sse import ServerSentEvent, aconnect_sse

from sovereign.backends.base import FEATURES, Capabilities
from sovereign.backends.context_fit import MESSAGE_OVERHEAD, PROMPT_OVERHEAD, estimate_tokens, message_text
from sovereign.backends.openai_wire import choice_logprobs, delta_tool_calls, message_tool_calls, wire_message
from sovereign.config import DeploymentSettings, resolve_secret
from sovereign.errors import (
    ConfigError,
    ContextLengthExceededError,
    EngineError,
    EngineOverloadedError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    SovereignError,
    UnsupportedParameterError,
)
from sovereign.observability.genai import traced_generation
from sovereign.types import FinishReason, GenerationChunk, GenerationRequest, Usage

DEFAULT_CONTEXT_WINDOW = 4096


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """How one engine kind differs from plain OpenAI.

    ``tokenize_path`` (relative to the engine root) with ``tokenize_body(model, text) -> JSON`` and
    ``tokenize_count(JSON answer) -> int``; None = no endpoint, tokens are estimated by
    :func:`~sovereign.backends.context_fit.estimate_tokens` (an over-count for prose and code).
    ``json_upstream``: the deployment default for sending non-streaming requests upstream as JSON.
    """

    label: str
    health_path: str
    tokenize_path: str | None = None
    tokenize_body: Callable[[str, str], dict[str, Any]] = lambda model, text: {}
    tokenize_count: Callable[[Any], int] = lambda answer: 0
    json_mode: bool = True
    seed: bool = True
    ignore_eos: bool = False
    stream_usage: bool = True
    json_upstream: bool = False
    tools: bool = True
    json_schema: bool = True
    logprobs: bool = True
    samplers: bool = False  # takes top_k, min_p, repetition_penalty


def _count_field(answer: Any) -> int:
    return int(answer["count"])


def _tokens_len(answer: Any) -> int:
    return len(answer["tokens"])


PROFILES: dict[str, EngineProfile] = {
    "vllm": EngineProfile(
        "vLLM",
        "/health",
        "/tokenize",
        lambda m, t: {"model": m, "prompt": t, "add_special_tokens": False},
        _count_field,
        ignore_eos=True,
        samplers=True,
    ),
    "sglang": EngineProfile(
        "SGLang",
        "/health",
        "/tokenize",
        lambda m, t: {"model": m, "prompt": t, "add_special_tokens": False},
        _count_field,
        ignore_eos=True,
        samplers=True,
    ),
    "llamacpp-server": EngineProfile(
        "llama.cpp server",
        "/health",
        "/tokenize",
        lambda m, t: {"content": t, "add_special": False},
        _tokens_len,
        ignore_eos=True,
        samplers=True,
    ),
    "llama-cpp-python": EngineProfile(
        "llama-cpp-python server",
        "/v1/models",
        "/extras/tokenize/count",
        lambda m, t: {"input": t, "model": m},
        _count_field,
        stream_usage=False,
        json_upstream=True,
    ),
    "ollama": EngineProfile("Ollama /v1", "/api/version", logprobs=False),
    "tgi": EngineProfile(
        "TGI Messages API",
        "/health",
        "/tokenize",
        lambda m, t: {"inputs": t, "add_special_tokens": False},
        len,
        json_mode=False,
        json_schema=False,
    ),
    "triton": EngineProfile("Triton OpenAI frontend", "/health/ready", json_mode=False, tools=False, json_schema=False,
                            logprobs=False),
    "openai": EngineProfile("OpenAI-compatible", "/v1/models"),
}

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                    "function_call": "tool_calls"}
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})


def parse_usage(used: dict[str, Any]) -> Usage:
    """An engine's OpenAI ``usage`` object as :class:`Usage` (``prompt_tokens_details.cached_tokens``
    is the prompt-cache hit llama-server and vLLM report)."""
    details = used.get("prompt_tokens_details") or {}
    return Usage(int(used.get("prompt_tokens") or 0), int(used.get("completion_tokens") or 0),
                 int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0)


def translate_transport_error(engine: str, exc: httpx.HTTPError) -> EngineError:
    """The Sovereign error for an httpx failure talking to deployment ``engine``."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return EngineUnavailableError(f"Engine {engine} is unreachable ({type(exc).__name__}); is it running?")
    if isinstance(exc, httpx.TimeoutException):
        return EngineTimeoutError(f"Engine {engine} did not answer in time ({type(exc).__name__}).")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return EngineUnavailableError(f"Engine {engine} dropped the connection ({type(exc).__name__}).")
    return EngineError(f"Engine {engine} failed: {type(exc).__name__}: {exc}")


def vanished_peer(engine: str, exc: AttributeError) -> EngineUnavailableError:
    """The error for anyio's ``AttributeError: 'NoneType' object has no attribute 'getpeername'``:
    anyio 4.x raises it instead of a connect error when the engine's socket closes while httpcore
    sets the connection up (seen when a managed engine is killed under load). It means the engine
    went away, so it is EngineUnavailableError (which the managed engine resends after its restart).

    Raises:
        AttributeError: ``exc`` itself when it is any other AttributeError (a bug, not the engine).
    """
    if "getpeername" not in str(exc):
        raise exc
    return EngineUnavailableError(f"Engine {engine} closed the connection while it was opened; is it restarting?")


def translate_status(engine: str, status: int, body: bytes) -> SovereignError:
    """The Sovereign error for a non-200 answer (OpenAI envelope, TGI ``{"error": str}`` or text)."""
    message, code, kind = body.decode("utf-8", "replace")[:500], None, None
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code, kind = error.get("code"), error.get("type") or error.get("error_type")
        elif isinstance(error, str):
            message = error
    except orjson.JSONDecodeError:
        pass
    text = f"Engine {engine} answered {status}: {message}"
    if status in (400, 422):
        if code in _CONTEXT_CODES or kind in _CONTEXT_CODES:
            return ContextLengthExceededError(text, param="messages")
        return InvalidRequestError(text)
    if status in (401, 403):
        return EngineError(f"{text}. Check the deployment's api_key_env.", code="engine_auth_failed")
    if status == 404:
        return EngineError(f"{text}. Check the deployment's served_model and base_url.", code="engine_not_found")
    if status == 408:
        return EngineTimeoutError(text)
    if status == 429:
        return EngineOverloadedError(text)
    if status == 503:
        return EngineUnavailableError(text)
    return EngineError(text)


class OpenAICompatBackend:
    """A :class:`~sovereign.backends.base.ChatBackend` over one OpenAI-compatible deployment.

    Args:
        settings: the deployment (engine kind, base URL ending in /v1, served model id, window, key).
        client: the shared ``httpx.AsyncClient`` (inject a ``MockTransport`` in tests); not closed here.
        connect_timeout_s / total_timeout_s: httpx connect and read limits in seconds (the router
            enforces the first-token and whole-generation deadlines).
    """

    def __init__(
        self,
        settings: DeploymentSettings,
        client: httpx.AsyncClient,
        *,
        connect_timeout_s: float = 2.0,
        total_timeout_s: float = 600.0,
    ) -> None:
        if not settings.base_url:
            raise EngineUnavailableError(f"Deployment {settings.name} has no base_url.")
        self.name = settings.name
        self.settings = settings
        self.profile = PROFILES[settings.engine]
        self.base_url = settings.base_url.rstrip("/")
        self.root_url = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self.served_model = settings.served_model or settings.model
        self._client = client
        self._timeout = httpx.Timeout(total_timeout_s, connect=connect_timeout_s)
        self._probe_timeout = httpx.Timeout(max(connect_timeout_s, 1.0), connect=connect_timeout_s)
        key = resolve_secret(settings.api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._counts: LRUCache[str, int] = LRUCache(maxsize=4096)
        self._tokenize = self.profile.tokenize_path is not None
        allowed = [f for f in FEATURES if f != "tokenize"]  # tokenize follows the profile's endpoint
        unknown = sorted(set(settings.features) - set(allowed))
        if unknown:
            raise ConfigError(f"backends.deployments[{settings.name}].features: unknown {unknown}; "
                              f"known: {', '.join(allowed)}.")
        self._features = dict(settings.features)

    @property
    def capabilities(self) -> Capabilities:
        p = self.profile
        declared = Capabilities(
            context_window=self.settings.context_window or DEFAULT_CONTEXT_WINDOW,
            json_mode=p.json_mode,
            seed=p.seed,
            ignore_eos=p.ignore_eos,
            tools=p.tools,
            json_schema=p.json_schema,
            logprobs=p.logprobs,
            tokenize=p.tokenize_path is not None,
            engine=p.label,
            owned_by=self.settings.engine,
        )
        return replace(declared, **self._features) if self._features else declared  # type: ignore[arg-type]

    @property
    def ready(self) -> bool:
        return True  # remote: availability is the breaker's and the health probe's business

    async def start(self) -> None:
        """Nothing to load; reachability is checked by :meth:`health` and on each call."""

    async def close(self) -> None:
        """The injected client belongs to the caller."""

    # -- health and tokens ---------------------------------------------------------------------

    async def health(self) -> float:
        """Probe the engine's health path; return the round trip in seconds.

        Raises:
            EngineUnavailableError / EngineTimeoutError / EngineError: unreachable or unhealthy.
        """
        started = time.perf_counter()
        try:
            response = await self._client.get(
                self.root_url + self.profile.health_path, headers=self._headers, timeout=self._probe_timeout
            )
        except httpx.HTTPError as exc:
            raise translate_transport_error(self.name, exc) from exc
        if response.status_code != 200:
            raise translate_status(self.name, response.status_code, response.content)
        return time.perf_counter() - started

    async def count_text_tokens(self, text: str) -> int:
        """Tokens of ``text`` (no template) via the engine's tokenize endpoint, else the estimate.

        Results are memoised (the 4,096 most recently used texts). A 404 or 405 from the endpoint
        switches to the estimate (:func:`~sovereign.backends.context_fit.estimate_tokens`).

        Raises:
            EngineError subclasses: the engine is unreachable or failed.
        """
        if not self._tokenize:
            return estimate_tokens(text)
        cached = self._counts.get(text)
        if cached is not None:
            return cached
        url = self.root_url + (self.profile.tokenize_path or "")
        try:
            response = await self._client.post(
                url,
                json=self.profile.tokenize_body(self.served_model, text),
                headers=self._headers,
                timeout=self._probe_timeout,
            )
        except httpx.HTTPError as exc:
            raise translate_transport_error(self.name, exc) from exc
        if response.status_code in (404, 405):
            self._tokenize = False
            return estimate_tokens(text)
        if response.status_code != 200:
            raise translate_status(self.name, response.status_code, response.content)
        try:
            count = self.profile.tokenize_count(orjson.loads(response.content))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise EngineError(f"Engine {self.name} answered garbage to tokenize: {exc}") from exc
        self._counts[text] = count
        return count

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens: message tokens plus chat-template overhead (an estimate of the template)."""
        if not request.is_chat:
            return await self.count_text_tokens(request.prompt or "") + PROMPT_OVERHEAD
        counts = [await self.count_text_tokens(message_text(m)) for m in request.messages]
        return sum(counts) + MESSAGE_OVERHEAD * len(counts) + PROMPT_OVERHEAD

    # -- generation ----------------------------------------------------------------------------

    def request_body(self, request: GenerationRequest) -> dict[str, Any]:
        """The upstream JSON body for ``request`` (always ``stream: true``).

        Raises:
            UnsupportedParameterError: json mode or ignore_eos on an engine that cannot honour it.
        """
        p, s = self.profile, request.sampling
        if s.json_mode and not p.json_mode:
            raise UnsupportedParameterError(
                f"{p.label} ({self.name}) does not support response_format json_object.", param="response_format"
            )
        if s.ignore_eos and not p.ignore_eos:
            raise UnsupportedParameterError(f"{p.label} ({self.name}) does not support ignore_eos.", param="ignore_eos")
        streamed = not self.whole_answer(request)
        body: dict[str, Any] = {
            "model": self.served_model,
            "stream": streamed,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if request.is_chat:
            body["messages"] = [wire_message(m) for m in request.messages]
            if request.tools:
                body["tools"] = list(request.tools)
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        else:
            body["prompt"] = request.prompt or ""
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        if s.seed is not None and p.seed:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        if s.json_mode:
            body["response_format"] = {"type": "json_object"}
        if s.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "response", "schema": s.json_schema, "strict": True}}
        if s.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in s.logit_bias.items()}
        if s.samplers and p.samplers:
            body.update(s.samplers)
        if s.logprobs:
            body["logprobs"] = True
            if s.top_logprobs:
                body["top_logprobs"] = s.top_logprobs
        if s.ignore_eos:
            body["ignore_eos"] = True
        if p.stream_usage and streamed:
            body["stream_options"] = {"include_usage": True}
        return body

    def whole_answer(self, request: GenerationRequest) -> bool:
        """True when ``request`` goes upstream as plain JSON: a buffered (non-streaming) client request
        on a deployment with ``json_upstream`` (its setting, else the engine profile's default). The
        engine then answers only when it is done, so the router applies the total timeout instead of
        the first-token timeout."""
        chosen = self.settings.json_upstream
        return request.buffered and (self.profile.json_upstream if chosen is None else chosen)

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream one generation from the engine inside a GenAI span (``chat SERVED_MODEL``, provider
        = the engine kind); raises as :meth:`_stream`."""
        return traced_generation(self._stream(request), request, provider=self.settings.engine,
                                 model=self.served_model)

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream one generation from the engine (see :class:`~sovereign.backends.base.ChatBackend`).

        Raises:
            EngineUnavailableError: unreachable, 503, or the connection dropped (also mid-stream).
            EngineOverloadedError: 429. EngineTimeoutError: 408 or a read timeout.
            EngineError: other 5xx, 401/403/404, an error event or garbage in the stream.
            InvalidRequestError / ContextLengthExceededError: the engine rejected the request (400),
                or ``max_tokens`` alone fills this deployment's configured window (checked here: a
                remote engine may be configured with a larger window than the deployment declares).
        """
        window = self.capabilities.context_window
        requested = request.sampling.max_tokens
        if requested is not None and requested >= window:
            raise ContextLengthExceededError(
                f"This deployment's context window is {window} tokens; max_tokens={requested} leaves no room "
                "for the prompt. Lower max_tokens.", param="max_tokens")
        body = self.request_body(request)
        url = self.base_url + ("/chat/completions" if request.is_chat else "/completions")
        if not body["stream"]:
            async for chunk in self._whole(url, body, request.is_chat):
                yield chunk
            return
        try:
            async with aconnect_sse(
                self._client,
                "POST",
                url,
                content=orjson.dumps(body),
                headers={**self._headers, "Content-Type": "application/json"},
                timeout=self._timeout,
            ) as source:
                response = source.response
                if response.status_code != 200:
                    raise translate_status(self.name, response.status_code, await response.aread())
                async with aclosing(source.aiter_sse()) as events:
                    async for chunk in self._parse(events, request.is_chat):
                        yield chunk
        except httpx.HTTPError as exc:  # httpx_sse.SSEError (a 200 that is not text/event-stream) included
            raise translate_transport_error(self.name, exc) from exc
        except AttributeError as exc:
            raise vanished_peer(self.name, exc) from exc

    async def _whole(self, url: str, body: dict[str, Any], chat: bool) -> AsyncIterator[GenerationChunk]:
        """One JSON request (``json_upstream``): the answer as one text chunk, then the final chunk."""
        try:
            response = await self._client.post(url, content=orjson.dumps(body), timeout=self._timeout,
                                               headers={**self._headers, "Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise translate_transport_error(self.name, exc) from exc
        except AttributeError as exc:
            raise vanished_peer(self.name, exc) from exc
        if response.status_code != 200:
            raise translate_status(self.name, response.status_code, response.content)
        try:
            answer = orjson.loads(response.content)
            choice = answer["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") if chat else choice.get("text")
            usage = parse_usage(answer.get("usage") or {})
            calls = message_tool_calls(message) if chat else []
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise EngineError(f"Engine {self.name} answered garbage: {response.content[:200]!r}") from exc
        if text or calls:
            yield GenerationChunk(text=text or "", usage=usage, tool_calls=calls or None,
                                  logprobs=choice_logprobs(choice))
        yield GenerationChunk(text="", usage=usage, finish_reason=_FINISH.get(choice.get("finish_reason"), "stop"))

    async def _parse(self, events: AsyncIterator[ServerSentEvent], chat: bool) -> AsyncIterator[GenerationChunk]:
        """SSE events (decoded by httpx-sse: multi-line ``data``, comments, ``event:`` fields, CRLF)
        -> chunks; the final chunk (finish reason + usage) comes at ``[DONE]`` or the stream's end."""
        usage = Usage()
        upstream_usage = False
        finish: FinishReason | None = None
        async for event in events:
            data = event.data.strip()
            if not data:
                continue  # an event without data ("event: ping", "id:" / "retry:" only)
            if data == "[DONE]":
                break
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise EngineError(f"Engine {self.name} sent an invalid stream event: {data[:200]!r}") from exc
            if "error" in payload:
                error = payload["error"]
                message = error.get("message") if isinstance(error, dict) else error
                raise EngineError(f"Engine {self.name} failed mid-stream: {message}")
            if payload.get("usage"):
                upstream_usage = True
                usage = parse_usage(payload["usage"])
            for choice in payload.get("choices") or ():
                delta = choice.get("delta") or {}
                text = delta.get("content") if chat else choice.get("text")
                try:
                    calls = delta_tool_calls(delta) if chat else []
                except (KeyError, TypeError, ValueError) as exc:
                    raise EngineError(f"Engine {self.name} sent a malformed tool call: {data[:200]!r}") from exc
                if text or calls:
                    if not upstream_usage:
                        usage.completion_tokens += 1  # one content event ~ one token
                    yield GenerationChunk(text=text or "", usage=replace(usage), tool_calls=calls or None,
                                          logprobs=choice_logprobs(choice))
                if choice.get("finish_reason"):
                    finish = _FINISH.get(choice["finish_reason"], "stop")
        if finish is None:
            raise EngineUnavailableError(f"Engine {self.name} ended the stream without a finish reason.")
        yield GenerationChunk(text="", usage=usage, finish_reason=finish)
