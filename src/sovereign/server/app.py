"""The app factory: assembles settings, backends and routes into one FastAPI app.

Errors are mapped here, at the edge, by class: every :class:`~sovereign.errors.SovereignError`
becomes its HTTP status with the OpenAI envelope; request validation errors (malformed JSON,
wrong types, missing fields) become 400 ``invalid_request_error`` naming the field; anything
unexpected becomes a 500 envelope without internals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sovereign.backends.registry import ModelRegistry, default_engine
from sovereign.config import Settings
from sovereign.errors import SovereignError
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.server import routes
from sovereign.server.middleware import GatewayMiddleware
from sovereign.server.responses import OrjsonResponse
from sovereign.server.startup import start_all
from sovereign.server.state import AppState

log = logging.getLogger("sovereign.server")


EMBEDDING_ALIASES = ("text-embedding-all-minilm-l6-v2",)


def build_registry(settings: Settings, *, embedding: bool = True) -> ModelRegistry:
    """The default registry: the embedded chat model (a managed llama-server, not started until the
    registry starts) and,
    unless ``embedding`` is False, the MiniLM embedding model (its ONNX session loads here)."""
    registry = ModelRegistry()
    registry.add_chat(default_engine(settings))
    if embedding:
        registry.add_embedding(OnnxMiniLMEmbedder(settings.embeddings), aliases=list(EMBEDDING_ALIASES))
    return registry


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    where = f" at '{param}'" if param else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"Invalid request{where}: {first.get('msg')}{more}.", param


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SovereignError)
    async def sovereign_error(_request: Request, exc: SovereignError) -> OrjsonResponse:
        return OrjsonResponse(exc.to_envelope(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> OrjsonResponse:
        message, param = _validation_message(exc)
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
        return OrjsonResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> OrjsonResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        body = {"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}}
        return OrjsonResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> OrjsonResponse:
        log.exception("unhandled error", exc_info=exc)
        body = {"error": {"message": "Internal server error.", "type": "server_error", "param": None, "code": None}}
        return OrjsonResponse(body, status_code=500)


def _log_load_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("model load failed: %s", task.exception())


def create_app(settings: Settings, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the gateway. Models load in the background after start-up; ``/readyz`` says when done.

    Args:
        settings: loaded settings.
        registry: pre-built registry (tests, embedding the gateway); defaults to :func:`build_registry`.
    """
    state = AppState.build(settings, registry or build_registry(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await start_all(state, stack)  # the rooms, in the order sovereign.server.startup declares
            loader = asyncio.create_task(state.registry.start_all())
            loader.add_done_callback(_log_load_failure)
            app.state.loader = loader
            try:
                yield
            finally:
                loader.cancel()
                await state.registry.close_all()  # engines stop first, while logging and tracing still run

    app = FastAPI(title="Sovereign", version="0.1.0", lifespan=lifespan, default_response_class=OrjsonResponse)
    app.state.sovereign = state
    _install_error_handlers(app)
    for router in routes.ROUTERS:
        app.include_router(router)
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.server.max_body_bytes)
    return app
