"""Schemathesis against the gateway's own OpenAPI schema: no 5xx, no response that breaks the schema.

Every operation of ``/openapi.json`` is fuzzed with schemathesis 4 (``schemathesis.openapi.from_asgi``,
``Operation.as_strategy``, ``Case.call_and_validate``), in two generation modes:

- positive: bodies, path and query parameters valid against the request schema (random model names,
  random sampling values, random tool definitions, random flag and rollout names, base64 files...);
- negative: inputs that break the request schema on purpose (wrong JSON types, missing required fields,
  out-of-range numbers, lone surrogates and control characters in strings, bodies that are not JSON at
  all, e.g. ``b"\\x00"``).

Checks: ``not_a_server_error`` (no 5xx) and ``response_schema_conformance`` (the body matches the
schema declared for its status: error answers of the OpenAI-shaped routes are documented as the
OpenAI error envelope, ``/v1/messages`` as Anthropic's, so every 4xx body is checked too). The
in-process gateway runs on fake engines (as in tests/server/test_fuzz_no_500.py) with every room on,
so ~1,500 cases take about a minute; a second, smaller pass sends the operations that reach an engine
to the real gateway process (SmolLM2 on llama-server) with the model name pinned to the real model and
every token budget clamped to a few tokens. The harness itself is shown to fail on an app answering
503, one raising, and one whose body breaks its declared model.

Found by it and fixed: ``GET /v1/documents?offset=2**63`` answered 500 (SQLite integer overflow);
the route now bounds ``offset`` (400), pinned by a test below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from sovereign.backends.registry import ModelRegistry
from sovereign.config import load_settings
from sovereign.server.app import create_app
from sovereign.testing.agent_fakes import FakeChatModel, FakeEmbedder
from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"
EMBEDDING = "all-minilm-l6-v2"
CHECKS = [not_a_server_error, response_schema_conformance]
EXAMPLES = 30  # per operation and mode in process: ~38 operations -> ~1,500 cases
LIVE_EXAMPLES = 12  # per operation and mode against the real engine
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
MIN_CASES = 1000


def clamp_budget(case: Case, model: str | None = None) -> Case:
    """``case`` with every token budget at most 4 and ``n`` at most 2 (and ``model`` pinned when given),
    so no generated request asks an engine for thousands of tokens."""
    body: Any = case.body
    if isinstance(body, dict):
        for field, most in (*((f, 4) for f in TOKEN_FIELDS), ("n", 2)):
            value = body.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value > most:
                body[field] = most
        if model is not None and "model" in body:
            body["model"] = model
    return case


INT64_MAX = 2**63 - 1


def operation_id(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def operations_of(schema: Any) -> list[Any]:
    """Every operation of ``schema``; fails when one cannot be read from it."""
    results = list(schema.get_all_operations())
    unreadable = [result for result in results if not isinstance(result, Ok)]
    assert unreadable == [], unreadable
    return [result.ok() for result in results if isinstance(result, Ok)]


def run_examples(strategy: Any, examples: int, on_case: Callable[[Case], object]) -> None:
    """``on_case`` on ``examples`` cases drawn from ``strategy`` (Hypothesis, no example database,
    derandomized so that a run is repeatable; a failure is shrunk and re-raised)."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Case) -> None:
        on_case(case)

    run()


def fuzz(operations: list[Any], send: Callable[[Case], object], examples: int,
         modes: tuple[GenerationMode, ...], model: str | None = None) -> tuple[Counter[str], list[str]]:
    """Run ``examples`` generated cases per operation and mode through ``send``.

    Returns the number of cases sent per operation and one line per failing operation (Hypothesis
    shrinks each failure to a minimal case; the line carries the check's message and a curl command).
    """
    counts: Counter[str] = Counter()
    failures: list[str] = []
    for operation in operations:
        name = operation_id(operation)
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode).map(
                lambda case: clamp_budget(case, model))

            def on_case(case: Case, name: str = name) -> None:
                counts[name] += 1
                send(case)

            try:
                run_examples(strategy, examples, on_case)
            except Unsatisfiable:  # no way to break this operation's schema (one free-form string path parameter)
                assert mode is GenerationMode.NEGATIVE, name
            except (Exception, BaseExceptionGroup) as exc:  # one report per operation and mode, after shrinking
                failures.append(f"{name} [{mode.value}]: {type(exc).__name__}: {str(exc)[:1500]}")
    return counts, failures


def has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.fixture(scope="module")
def asgi_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    registry = ModelRegistry()
    registry.add_chat(FakeChatModel("hello there", name=MODEL))
    embedder = FakeEmbedder()
    embedder.name = EMBEDDING
    registry.add_embedding(embedder)
    data: Path = tmp_path_factory.mktemp("schemathesis")
    # every room on (the response cache included: a room that is off answers 503 by design)
    app = create_app(load_settings(data_dir=data, observability={"log_level": "CRITICAL"},
                                   drift={"enabled": True}), registry)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()


def test_every_operation_in_process_no_5xx_no_schema_violation(asgi_schema: Any) -> None:
    operations = operations_of(asgi_schema)
    assert len(operations) >= 30, [operation_id(o) for o in operations]

    def send(case: Case) -> None:
        case.call_and_validate(checks=CHECKS)

    counts, failures = fuzz([o for o in operations if has_inputs(o)], send, EXAMPLES,
                            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    plain, plain_failures = fuzz([o for o in operations if not has_inputs(o)], send, 3, (GenerationMode.POSITIVE,))
    counts.update(plain)
    failures += plain_failures
    total = sum(counts.values())
    print(f"\nschemathesis in process: {total} cases over {len(counts)} operations")
    for name, n in sorted(counts.items()):
        print(f"  {n:5d}  {name}")
    assert not failures, "\n\n".join(failures)
    assert set(counts) == {operation_id(o) for o in operations}, "an operation got no case"
    assert total >= MIN_CASES


def test_documents_offset_beyond_int64_is_not_a_500(asgi_schema: Any) -> None:
    """Bad input: an offset past SQLite's 64-bit integers (it answered 500 before the bound)."""
    operation = asgi_schema["/v1/documents"]["GET"]
    case = operation.Case(query={"offset": INT64_MAX + 1})
    response = case.call()
    assert response.status_code == 400, response.text


class Reply(BaseModel):
    count: int


def test_the_checks_catch_a_5xx_and_a_body_off_schema() -> None:
    """The harness can fail: an app answering 503, one raising (a 500), one whose body breaks its model."""
    app = FastAPI()

    @app.post("/unavailable")
    async def unavailable(body: Reply) -> JSONResponse:
        return JSONResponse({"error": "down"}, status_code=503)

    @app.post("/boom")
    async def boom(body: Reply) -> Reply:
        raise RuntimeError("server bug")

    @app.get("/off-schema", responses={200: {"model": Reply}})
    async def off_schema() -> dict[str, Any]:
        return {"count": "not a number"}

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = operations_of(schema)
    counts, failures = fuzz(operations, lambda case: case.call_and_validate(checks=CHECKS), 5,
                            (GenerationMode.POSITIVE,))
    from schemathesis.python.asgi import shutdown_lifespans

    shutdown_lifespans()
    found = {line.split(" [")[0]: line for line in failures}
    assert set(found) == {"POST /unavailable", "POST /boom", "GET /off-schema"}, failures
    assert "Server error" in found["POST /unavailable"] and "server bug" in found["POST /boom"]
    assert "violates schema" in found["GET /off-schema"]
    assert all(counts[name] >= 1 for name in found)


LIVE_OPERATIONS = {"POST /v1/chat/completions", "POST /v1/completions", "POST /v1/responses", "POST /v1/messages",
                   "POST /v1/messages/count_tokens", "POST /v1/embeddings", "POST /tokenize", "POST /detokenize",
                   "POST /v1/rerank"}


@pytest.mark.integration
@pytest.mark.slow
def test_generation_operations_on_the_real_engine(live_server: LiveServer) -> None:
    """The operations that reach an engine, against the real gateway process (SmolLM2 on llama-server):
    the model name pinned to the real one (else nearly every case is a 404), budgets clamped to 4 tokens."""
    schema = schemathesis.openapi.from_url(live_server.url + "/openapi.json")
    operations = [o for o in operations_of(schema) if operation_id(o) in LIVE_OPERATIONS]
    assert {operation_id(o) for o in operations} == LIVE_OPERATIONS

    def send(case: Case) -> None:
        if case.operation.path == "/v1/embeddings" and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = EMBEDDING
        case.call_and_validate(base_url=live_server.url, checks=CHECKS, timeout=120)

    counts, failures = fuzz(operations, send, LIVE_EXAMPLES, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
                            model=MODEL)
    print(f"\nschemathesis on the real engine: {sum(counts.values())} cases over {len(counts)} operations")
    assert not failures, "\n\n".join(failures)
    assert set(counts) == LIVE_OPERATIONS
