"""The floor for an HTTP gateway built on Sovereign's stack: FastAPI + uvicorn + one shared httpx client.

``routing_bench.py`` runs it as the ``passthrough`` target: the request body goes upstream as-is
and the answer comes back as-is (JSON, or the SSE stream forwarded chunk by chunk), with no
validation, routing, retries, metrics, logs or traces. What it adds over ``direct`` is the cost of
one more hop through these libraries on this machine; what Sovereign adds over it is Sovereign's
own work. Run: ``UPSTREAM=http://127.0.0.1:PORT/v1 uvicorn --app-dir bench passthrough_proxy:app``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:8000/v1")
client = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
app = FastAPI()


@app.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response | StreamingResponse:
    """Forward the body; stream back when the client asked for a stream (``"stream": true``)."""
    body = await request.body()
    headers = {"content-type": "application/json"}
    if b'"stream":true' not in body.replace(b" ", b""):
        answer = await client.post(UPSTREAM + "/chat/completions", content=body, headers=headers)
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")
    upstream = await client.send(
        client.build_request("POST", UPSTREAM + "/chat/completions", content=body, headers=headers), stream=True
    )

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for piece in upstream.aiter_raw():
                yield piece
        finally:
            await upstream.aclose()

    return StreamingResponse(relay(), status_code=upstream.status_code, media_type="text/event-stream")
