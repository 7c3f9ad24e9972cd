"""``POST /v1/responses``: the OpenAI Responses API, served on the chat path.

Authenticates (stage 1) and parses (stage 2: :class:`~sovereign.server.responses_wire.ResponsesRequest`
into a chat :class:`~sovereign.types.GenerationRequest`), then hands the request to
:func:`sovereign.server.request_flow.generate` with
:class:`~sovereign.server.responses_shape.ResponsesShape`. Errors use the OpenAI envelope (the
global handler), as OpenAI does for this API.

``previous_response_id`` continues a conversation kept by :class:`ResponseStore`: in memory, per
gateway process, the last :data:`STORE_CAPACITY` responses made with ``store`` not false, visible
to the tenant that made them only. See docs/responses.md.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from sovereign.errors import NotFoundError
from sovereign.server.request_flow import generate
from sovereign.server.responses import OrjsonResponse
from sovereign.server.responses_shape import ResponsesShape
from sovereign.server.responses_wire import ResponsesRequest, echo
from sovereign.server.schemas import ERROR_RESPONSES
from sovereign.server.state import get_state, ignored_fields_headers, require_api_key
from sovereign.types import ChatMessage, ToolCall

router = APIRouter(responses=ERROR_RESPONSES)
STORE_CAPACITY = 1024
Conversation = tuple[ChatMessage, ...]


class ResponseStore:
    """The conversations (input history and answer, instructions excluded, as OpenAI does) of the
    last ``capacity`` stored responses, by response id; the oldest is forgotten first."""

    def __init__(self, capacity: int = STORE_CAPACITY) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[str, Conversation]] = OrderedDict()
        self._lock = Lock()

    def get(self, tenant: str, response_id: str) -> Conversation:
        """The conversation ending with response ``response_id``.

        Raises:
            NotFoundError: no such response of ``tenant`` in this process (never stored, forgotten,
                made by another tenant or another gateway process).
        """
        with self._lock:
            found = self._items.get(response_id)
        if found is None or found[0] != tenant:
            raise NotFoundError(f"Previous response with id {response_id!r} not found (responses are kept in "
                                f"memory, per gateway process, the last {self.capacity}).",
                                param="previous_response_id")
        return found[1]

    def put(self, tenant: str, response_id: str, conversation: Conversation) -> None:
        """Keep ``conversation`` as response ``response_id``'s."""
        with self._lock:
            self._items[response_id] = (tenant, conversation)
            self._items.move_to_end(response_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def answer_message(output: list[dict[str, Any]]) -> ChatMessage:
    """A response's ``output`` items as the assistant turn of the conversation."""
    text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
    calls = tuple(ToolCall(item["call_id"], item["name"], item["arguments"])
                  for item in output if item["type"] == "function_call")
    return ChatMessage("assistant", text, calls)


def store_of(request: Request) -> ResponseStore:
    """This app's response store (made on first use)."""
    state = get_state(request)
    if state.responses is None:
        state.responses = ResponseStore()
    return state.responses


@router.post("/v1/responses", response_model=None)
async def create_response(
    request: Request, body: ResponsesRequest, tenant: str = Depends(require_api_key)
) -> OrjsonResponse | StreamingResponse:
    """A model response (a ``response`` object, or SSE events when ``stream`` is true).

    Raises:
        NotFoundError: ``previous_response_id`` is not in this process's store.
        InvalidRequestError: see :meth:`ResponsesRequest.to_domain`; anything ``generate`` raises.
    """
    store = store_of(request)
    history = store.get(tenant, body.previous_response_id) if body.previous_response_id else ()
    domain = body.to_domain(history)  # a refused field names itself before the ignored-fields report
    ignored = ignored_fields_headers(request, body)
    conversation = domain.messages[1:] if body.instructions else domain.messages

    def keep(response_id: str, output: list[dict[str, Any]]) -> None:
        store.put(tenant, response_id, (*conversation, answer_message(output)))

    shape = ResponsesShape(model=body.model, request=echo(body), on_output=keep if body.store is not False else None)
    response = await generate(request, domain, shape, tenant=tenant, stream=body.stream, cache_field=body.cache,
                              metadata=body.metadata)
    response.headers.update(ignored)
    return response
