"""Pure logic of routing: openai_compat translation (httpx.MockTransport), retries, fallback, complete()
restart, breaker states, sticky weighted split, context fitting and config validation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from sovereign.backends.base import collect
from sovereign.backends.breaker import BreakerState, CircuitBreaker
from sovereign.backends.context_fit import fit_request, select_messages
from sovereign.backends.openai_compat import OpenAICompatBackend, translate_status
from sovereign.backends.registry import ModelRegistry
from sovereign.backends.router import Deployment, PinnedModel, Router, RoutingPolicy
from sovereign.backends.routing_table import build_deployments, validate_backends
from sovereign.config import BackendsSettings, DeploymentSettings, load_settings
from sovereign.errors import (
    ConfigError,
    ContextLengthExceededError,
    EngineError,
    EngineOverloadedError,
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    StreamInterruptedError,
    UnsupportedParameterError,
)
from sovereign.types import ChatMessage, GenerationRequest, SamplingParams

pytestmark = pytest.mark.anyio
FAST = RoutingPolicy(
    retry_attempts=3,
    retry_initial_s=0.001,
    retry_max_s=0.002,
    retry_jitter_s=0.0,
    first_token_timeout_s=1.0,
    total_timeout_s=5.0,
)


def sse(*texts: str, drop: bool = False) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    if drop:
        return body
    end = {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    return body + b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n"


def request(*contents: str, max_tokens: int = 8, **sampling: object) -> GenerationRequest:
    msgs = tuple(ChatMessage("user", c) for c in contents) or (ChatMessage("user", "hi"),)
    return GenerationRequest(model="m", sampling=SamplingParams(max_tokens=max_tokens, **sampling), messages=msgs)


class Script:
    """A MockTransport handler answering each deployment's calls from a list of (status, body)."""

    def __init__(self, **answers: list[tuple[int, bytes]]) -> None:
        self.answers = {k: iter(v) for k, v in answers.items()}
        self.calls: dict[str, int] = {}
        self.bodies: list[dict] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        host = req.url.host
        self.calls[host] = self.calls.get(host, 0) + 1
        self.bodies.append(json.loads(req.content))
        status, body = next(self.answers[host])
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})


@pytest.fixture
def client_for() -> Iterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(script: Script) -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(script)))
        return clients[-1]

    yield make


def deployment(
    name: str, client: httpx.AsyncClient, engine: str = "openai", window: int = 4096, weight: float = 1.0
) -> Deployment:
    settings = DeploymentSettings(
        name=name,
        model="m",
        engine=engine,
        base_url=f"http://{name}/v1",  # type: ignore[arg-type]
        context_window=window,
        weight=weight,
    )
    return Deployment(name, OpenAICompatBackend(settings, client), CircuitBreaker(name, 3, 60), window, weight)


async def test_retry_then_success_and_sse_translation(client_for) -> None:
    script = Script(a=[(500, b"{}"), (429, b"{}"), (200, sse("Hel", "lo"))])
    async with client_for(script) as client:
        router = Router("m", [deployment("a", client)], FAST)
        result = await collect(router.stream(request(seed=3, stop=("x",))))
    assert result.text == "Hello" and result.usage.prompt_tokens == 7
    assert result.metadata["route"] == {"deployment": "a", "retries": 2, "fallbacks": 0, "trimmed_messages": 0}
    assert script.bodies[-1]["stream"] is True and script.bodies[-1]["seed"] == 3 and script.bodies[-1]["stop"] == ["x"]


async def test_fallback_opens_breaker_and_complete_restarts_mid_stream(client_for) -> None:
    script = Script(
        a=[(503, b"{}")] * 3, b=[(200, sse("one", "two", drop=True)), (200, sse("fine"))], c=[(200, sse("from c"))]
    )
    async with client_for(script) as client:
        a, b, c = deployment("a", client), deployment("b", client, weight=0), deployment("c", client, weight=0)
        router = Router("m", [a, b, c], FAST)
        result = await router.complete(request())  # a fails 3x, b drops after tokens, c answers
        assert result.text == "from c" and a.breaker.state is BreakerState.OPEN
        stream = router.stream(request())  # a skipped (open), b answers
        assert (await collect(stream)).text == "fine"
        assert script.calls == {"a": 3, "b": 2, "c": 1}


async def test_stream_interrupted_after_first_token(client_for) -> None:
    async with client_for(Script(a=[(200, sse("one", drop=True))])) as client:
        router = Router("m", [deployment("a", client)], FAST)
        with pytest.raises(StreamInterruptedError):
            await collect(router.stream(request()))


async def test_unsupported_param_skips_deployment_and_400_when_none_can(client_for) -> None:
    script = Script(b=[(200, sse("ok"))])
    async with client_for(script) as client:
        only_ollama = Router("m", [deployment("a", client, engine="ollama")], FAST)
        with pytest.raises(UnsupportedParameterError):
            await collect(only_ollama.stream(request(ignore_eos=True)))
        mixed = Router("m", [deployment("a", client, engine="ollama"), deployment("b", client, engine="vllm")], FAST)
        assert (await collect(mixed.stream(request(ignore_eos=True)))).text == "ok"
        assert script.bodies[-1]["ignore_eos"] is True


def test_breaker_half_open_and_close() -> None:
    now = [0.0]
    breaker = CircuitBreaker("x", failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # exactly one trial
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    breaker.probe_passed()
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_weighted_split_is_sticky_and_proportional() -> None:
    deps = [Deployment(n, None, CircuitBreaker(n), 100, w) for n, w in (("a", 3), ("b", 1), ("z", 0))]  # type: ignore[arg-type]
    router = Router("m", deps)
    firsts = [router.order(f"user-{i}")[0].name for i in range(4000)]
    assert 0.7 < firsts.count("a") / 4000 < 0.8 and "z" not in firsts
    assert router.order("alice") == router.order("alice") and router.order("alice")[-1].name in {"a", "b", "z"}


def test_select_messages_policies() -> None:
    roles = ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    costs = [10] * 8
    assert select_messages(roles, costs, 40) == [0, 5, 6, 7]
    assert select_messages(roles, costs, 50) == [0, 5, 6, 7]  # a kept tail never starts with assistant
    assert select_messages(roles, costs, 60) == [0, 3, 4, 5, 6, 7]
    assert select_messages(roles, costs, 50, "head-and-tail", keep_head=1) == [0, 1, 5, 6, 7]
    assert select_messages(roles, costs, 15) is None


async def test_fit_request_counts_only_when_needed() -> None:
    calls: list[str] = []

    async def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    short = await fit_request(request("hi"), context_window=512, reserve_output_tokens=64, count=count)
    assert short.dropped == 0 and calls == []
    long = request(*[f"turn {i} " + "w " * 100 for i in range(9)], max_tokens=16)
    fitted = await fit_request(long, context_window=300, reserve_output_tokens=64, count=count)
    assert fitted.dropped > 0 and fitted.request.messages[-1] == long.messages[-1] and fitted.prompt_tokens <= 284
    with pytest.raises(ContextLengthExceededError):
        await fit_request(request("w " * 400), context_window=300, reserve_output_tokens=64, count=count)


def test_translate_status_by_code_not_text() -> None:
    body = json.dumps({"error": {"message": "too long", "type": "exceed_context_size_error", "code": 400}}).encode()
    assert isinstance(translate_status("e", 400, body), ContextLengthExceededError)
    assert isinstance(translate_status("e", 429, b"slow down"), EngineOverloadedError)
    assert isinstance(translate_status("e", 503, b"{}"), EngineUnavailableError)
    assert translate_status("e", 401, b"{}").code == "engine_auth_failed"


@pytest.mark.parametrize(
    "deployments",
    [
        [{"name": "a", "model": "m", "engine": "vllm", "base_url": "ftp://x/v1"}],
        [{"name": "a", "model": "m", "engine": "embedded"}, {"name": "a", "model": "n", "engine": "embedded"}],
    ],
    ids=["bad-scheme", "duplicate-name"],
)
def test_malformed_deployments_are_config_errors(deployments: list[dict]) -> None:
    with pytest.raises(ConfigError):
        validate_backends(BackendsSettings(deployments=deployments), "embedded-model")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deployment", "message"),
    [
        ({"name": "a", "model": "m", "engine": "vllm"}, "needs base_url"),  # a remote engine without its URL
        ({"name": "a", "model": "m", "engine": "ollama", "base_url": "http://x/v1", "model_path": "/m.gguf"},
         "model_path is for"),
    ],
    ids=["no-base-url", "model-path-on-remote"],
)
async def test_engine_factories_reject_their_own_bad_fields(deployment: dict, message: str) -> None:
    settings = load_settings(backends={"deployments": [deployment]})
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match=message):
            build_deployments(settings, ModelRegistry(), client)


def test_unknown_engine_kind_fails_at_load_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown engine kind 'vlm'; known: embedded, .*vllm"):
        load_settings(backends={"deployments": [{"name": "a", "model": "m", "engine": "vlm", "base_url": "http://x/v1"}]})


def test_unknown_alias_and_default_route_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="alias"):
        validate_backends(BackendsSettings(aliases={"x": "nope"}), "embedded-model")
    with pytest.raises(ConfigError, match="default_route"):
        validate_backends(BackendsSettings(default_route="nope"), "embedded-model")


def _long_chat() -> GenerationRequest:
    """A conversation whose byte bound exceeds a 512-token window, so fitting must count tokens."""
    return request(*[f"turn {i} " + "word " * 60 for i in range(9)], max_tokens=8)


async def test_tokenize_failure_resolves_the_half_open_trial() -> None:
    """Counting tokens for fitting fails on a half-open deployment: the trial must not stay claimed."""
    now = [0.0]
    tokenize_up = [False]
    calls: list[tuple[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append((req.url.host, req.url.path))
        if req.url.path == "/tokenize":
            if not tokenize_up[0]:
                return httpx.Response(503, json={"error": {"message": "tokenizer down"}})
            return httpx.Response(200, json={"count": len(json.loads(req.content)["prompt"].split())})
        return httpx.Response(200, content=sse("from " + req.url.host), headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = deployment("a", client, engine="vllm", window=512)
        a.breaker = CircuitBreaker("a", failure_threshold=1, cooldown_s=10, clock=lambda: now[0])
        b = deployment("b", client, weight=0)  # openai profile: estimates, never calls /tokenize
        router = Router("m", [a, b], FAST)
        a.breaker.record_failure()
        now[0] = 10.0
        assert a.breaker.state is BreakerState.HALF_OPEN
        result = await collect(router.stream(_long_chat()))  # a's trial: /tokenize answers 503
        assert result.metadata["route"]["deployment"] == "b"
        assert ("a", "/v1/chat/completions") not in calls
        assert a.breaker.state is BreakerState.OPEN  # the trial failed: reopened, not stuck half-open
        tokenize_up[0] = True
        assert await a.probe()  # the deployment recovered: the probe grants a new trial at once
        result = await collect(router.stream(_long_chat()))
        assert result.metadata["route"]["deployment"] == "a" and a.breaker.state is BreakerState.CLOSED


async def test_unexpected_error_while_fitting_releases_the_half_open_trial() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug, not the engine's fault")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        a = deployment("a", client, engine="vllm", window=512)
        now = [0.0]
        a.breaker = CircuitBreaker("a", failure_threshold=1, cooldown_s=10, clock=lambda: now[0])
        a.breaker.record_failure()
        now[0] = 10.0
        with pytest.raises(RuntimeError):
            await collect(Router("m", [a], FAST).stream(_long_chat()))
        assert a.breaker.state is BreakerState.HALF_OPEN and a.breaker.allow()  # trial free again


def test_registry_lists_and_resolves_aliases() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(Script()))
    registry = ModelRegistry()
    backend = deployment("a", client, engine="vllm").backend
    backend.name = "chat"
    registry.add_chat(backend, aliases=["gpt-4o-mini"])
    rows = registry.models()
    assert [(r.id, r.kind, r.owned_by, r.alias_of) for r in rows] == [
        ("chat", "chat", "vllm", None),
        ("gpt-4o-mini", "chat", "vllm", "chat"),
    ]
    assert registry.model("gpt-4o-mini").alias_of == "chat" and registry.chat("gpt-4o-mini") is backend
    with pytest.raises(ModelNotFoundError):
        registry.model("nope")


async def test_every_engine_call_is_one_genai_span(client_for, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from sovereign.observability import tracing

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    script = Script(a=[(500, b"{}"), (200, sse("Hel", "lo"))])
    async with client_for(script) as client:
        router = Router("m", [deployment("a", client, engine="vllm")], FAST)
        assert (await collect(router.stream(request(max_tokens=5)))).text == "Hello"
    failed, ok = memory.get_finished_spans()  # the retried attempt, then the answer
    assert failed.name == ok.name == "chat m"
    assert failed.status.status_code is StatusCode.ERROR
    attrs = dict(ok.attributes or {})
    assert attrs["gen_ai.provider.name"] == "vllm" and attrs["gen_ai.request.max_tokens"] == 5
    assert attrs["gen_ai.usage.input_tokens"] == 7 and attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    provider.shutdown()


async def test_json_upstream_sends_buffered_requests_as_json(client_for) -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                           "finish_reason": "length"}], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}
    script = Script(a=[(200, json.dumps(answer).encode()), (200, sse("str", "eamed"))])

    async def answer_late(req: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # later than the first-token timeout below
        return script(req)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer_late)) as client:
        dep = deployment("a", client)
        dep.backend.settings = dep.backend.settings.model_copy(update={"json_upstream": True})
        slow = replace(FAST, first_token_timeout_s=0.01, retry_attempts=1)  # must not apply to a JSON answer
        router = Router("m", [dep], slow)
        result = await router.complete(replace(request(), buffered=True))
        assert (result.text, result.finish_reason, result.usage.prompt_tokens) == ("Hello there", "length", 9)
        assert script.bodies[0]["stream"] is False and "stream_options" not in script.bodies[0]
        router = Router("m", [dep], FAST)
        assert (await collect(router.stream(request()))).text == "streamed"  # streaming clients still stream
        assert script.bodies[1]["stream"] is True


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


async def test_request_with_tools_skips_a_deployment_without_tools(client_for) -> None:
    script = Script(b=[(200, sse("ok"))])
    async with client_for(script) as client:
        router = Router("m", [deployment("a", client, engine="triton"), deployment("b", client)], FAST)
        tools_request = replace(request(), tools=(TOOL,), tool_choice="auto")
        result = await collect(router.stream(tools_request))
    assert result.metadata["route"]["deployment"] == "b"  # triton declares no tools: passed over, not called
    assert script.calls == {"b": 1} and script.bodies[0]["tools"] == [TOOL]
    assert router.capabilities.tools  # the route offers what one of its deployments has


async def test_no_deployment_with_the_feature_is_400_naming_it(client_for) -> None:
    script = Script()
    async with client_for(script) as client:
        router = Router("m", [deployment("a", client, engine="triton")], FAST)
        schema_request = replace(request(), sampling=SamplingParams(max_tokens=8, json_schema={"type": "object"}))
        with pytest.raises(UnsupportedParameterError, match="does not support json_schema") as exc:
            await collect(router.stream(schema_request))
    assert exc.value.param == "json_schema" and script.calls == {}


async def test_image_parts_go_only_to_a_vision_deployment_unflattened(client_for) -> None:
    script = Script(b=[(200, sse("a cat"))])
    parts = ({"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}})
    async with client_for(script) as client:
        vision = DeploymentSettings(name="b", model="m", engine="vllm", base_url="http://b/v1",  # type: ignore[arg-type]
                                    context_window=4096, features={"vision": True})
        router = Router("m", [deployment("a", client),
                              Deployment("b", OpenAICompatBackend(vision, client), CircuitBreaker("b"), 4096)], FAST)
        image_request = replace(request(), messages=(ChatMessage("user", "What is this?", parts=parts),))
        result = await collect(router.stream(image_request))
    assert result.metadata["route"]["deployment"] == "b" and script.calls == {"b": 1}
    assert script.bodies[0]["messages"][0]["content"] == list(parts)  # sent as parts, never flattened


def test_unknown_feature_override_is_a_config_error() -> None:
    bad = DeploymentSettings(name="x", model="m", engine="vllm", base_url="http://x/v1",  # type: ignore[arg-type]
                             features={"telepathy": True})
    with pytest.raises(ConfigError, match="telepathy"):
        OpenAICompatBackend(bad, httpx.AsyncClient())


async def test_a_pinned_request_reaches_only_its_deployment(client_for) -> None:
    """The pin of an evaluation: no weighted pick, no fallback; bad input: a deployment the route lacks."""
    script = Script(a=[(200, sse("A"))] * 2, z=[(500, b"{}")] * 5)
    async with client_for(script) as client:
        router = Router("m", [deployment("a", client), deployment("z", client, weight=0.0)], FAST)
        assert [d.name for d in router.order("u", "z")] == ["z"]
        with pytest.raises(EngineError):  # z fails and a pinned request does not fall back to a
            await collect(router.stream(replace(request(), deployment="z")))
        assert set(script.calls) == {"z"}
        pinned = PinnedModel(router, "a")  # a pipeline's own model calls keep the pin
        assert (await collect(pinned.stream(request()))).metadata["route"]["deployment"] == "a"
        with pytest.raises(InvalidRequestError, match="has no deployment 'nope'"):
            router.order("u", "nope")
