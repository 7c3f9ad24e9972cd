"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: the Anthropic Messages API.

Both authenticate (``x-api-key`` or a bearer token) and parse the body here, so that every error
(including authentication and malformed JSON) is answered in Anthropic's envelope
``{"type": "error", "error": {"type", "message"}}`` with the gateway's HTTP status; generation then
takes the chat path (:func:`sovereign.server.request_flow.generate`) with
:class:`~sovereign.server.anthropic_wire.MessagesShape`. See docs/anthropic.md.
"""

from __future__ import annotations

import logging
from typing import Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from sovereign.errors import InvalidRequestError, SovereignError
from sovereign.server.anthropic_wire import (
    CountTokensRequest,
    MessagesRequest,
    MessagesShape,
    error_body,
)
from sovereign.server.request_flow import generate
from sovereign.server.responses import OrjsonResponse
from sovereign.server.schemas import openapi_body
from sovereign.server.state import get_state, ignored_fields_headers, require_api_key

log = logging.getLogger("sovereign.server")


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error envelope, the body of every error answer of these routes (OpenAPI documents it)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


router = APIRouter(responses={status: {"model": AnthropicError} for status in (400, 401, 403, 404, 413, 429, 503)})
Body = TypeVar("Body", CountTokensRequest, MessagesRequest)


def validation_error(exc: ValidationError) -> InvalidRequestError:
    """A pydantic error as a 400 naming the (deepest) field at fault."""
    errors = exc.errors()
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = [str(p) for p in first.get("loc", ()) if "[" not in str(p) and p not in ("str", "function-after")]
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return InvalidRequestError(f"Invalid request{f' at {param!r}' if param else ''}: {first.get('msg')}{more}.",
                               param=param)


async def parse(request: Request, model: type[Body]) -> Body:
    """The JSON body as ``model``.

    Raises:
        InvalidRequestError: not JSON, not an object, or not valid against ``model`` (naming the field).
    """
    try:
        raw = await request.json()
    except ValueError:
        raise InvalidRequestError("The request body is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None


def error_response(exc: SovereignError) -> OrjsonResponse:
    """``exc`` in Anthropic's envelope with its HTTP status."""
    return OrjsonResponse(error_body(exc), status_code=exc.status_code, headers=exc.headers())


def unexpected(exc: Exception) -> OrjsonResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(SovereignError("Internal server error."))


@router.post("/v1/messages", response_model=None, openapi_extra=openapi_body(MessagesRequest))
async def create_message(request: Request) -> Response:
    """Anthropic Messages (JSON, or SSE events when ``stream`` is true)."""
    try:
        tenant = await require_api_key(request)
        body = await parse(request, MessagesRequest)
        ignored = ignored_fields_headers(request, body)
        response = await generate(request, body.to_domain(), MessagesShape(model=body.model), tenant=tenant,
                                  stream=body.stream, cache_field=body.cache)
    except SovereignError as exc:
        return error_response(exc)
    except Exception as exc:  # the envelope of this API, not the OpenAI one
        return unexpected(exc)
    response.headers.update(ignored)
    return response


@router.post("/v1/messages/count_tokens", response_model=None, openapi_extra=openapi_body(CountTokensRequest))
async def count_tokens(request: Request) -> Response:
    """``{"input_tokens": n}``: the prompt as the model's engine counts it (chat template and tools included)."""
    try:
        await require_api_key(request)
        body = await parse(request, CountTokensRequest)
        ignored = ignored_fields_headers(request, body)
        domain = body.to_domain()
        backend = get_state(request).registry.chat(domain.model)
        request.scope.setdefault("state", {})["model"] = backend.name
        tokens = await backend.count_prompt_tokens(domain)
    except SovereignError as exc:
        return error_response(exc)
    except Exception as exc:
        return unexpected(exc)
    return OrjsonResponse({"input_tokens": tokens}, headers=ignored)
