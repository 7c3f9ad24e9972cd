"""A tiny OpenAI-compatible engine that fails on command (a pure ASGI app, run as a real process).

``python -m sovereign.testing.fault_engine --port P`` serves on 127.0.0.1:

- ``POST /v1/chat/completions`` and ``/v1/completions``: streams ``REPLY`` word by word (SSE, with
  ``include_usage``-style usage) or a JSON body when ``stream`` is false, unless a fault is armed;
- ``GET /health``, ``GET /v1/models``, ``POST /tokenize`` (vLLM shape: ``{"count"}``, 1 token per word);
- ``POST /_fault`` ``{"mode": M, "times": N, "status": S, "ratio": R}`` arms fault ``M`` for the next
  ``N`` generation requests (``times`` -1 = until changed), or, with ``ratio`` (0..1), for that
  share of them, evenly spread (0.2: every 5th): ``ok``, ``status`` (answer ``S``: 500, 429,
  503...), ``hang`` (never answer), ``hang_after_headers`` (200 + headers, then silence),
  ``drop`` (two chunks, then the connection is cut), ``slow`` (``delay_s`` between chunks);
- ``GET /_stats`` -> ``{"requests": n, "by_mode": {...}, "last_body": {...}}``; ``POST /_reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from sovereign.backends.context_fit import estimate_tokens

REPLY = "fault engine says hello from the other side"

Scope = dict[str, Any]


class FaultEngine:
    """The ASGI app; state is per process (one armed fault at a time)."""

    def __init__(self) -> None:
        self.mode, self.times, self.status, self.delay_s = "ok", 0, 500, 0.05
        self.ratio: float | None = None
        self.requests = 0
        self.by_mode: dict[str, int] = {}
        self.last_body: dict[str, Any] = {}

    def _take_mode(self) -> str:
        if self.ratio is not None:  # request n faults when floor(n * ratio) steps up
            n = self.requests
            return self.mode if int(n * self.ratio) != int((n - 1) * self.ratio) else "ok"
        if self.times == 0:
            return "ok"
        if self.times > 0:
            self.times -= 1
        return self.mode

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body) if body else {}
        path = scope["path"]
        if path in ("/health", "/v1/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": "fault", "object": "model"}]})
        elif path == "/tokenize":
            await _json(send, 200, {"count": len(str(payload.get("prompt", "")).split()) or 1})
        elif path == "/_fault":
            self.mode = payload.get("mode", "ok")
            self.times = int(payload.get("times", -1))
            self.status = int(payload.get("status", 500))
            self.delay_s = float(payload.get("delay_s", 0.05))
            self.ratio = float(payload["ratio"]) if payload.get("ratio") is not None else None
            await _json(send, 200, {"armed": self.mode, "times": self.times})
        elif path == "/_reset":
            self.__init__()  # type: ignore[misc]
            await _json(send, 200, {"reset": True})
        elif path == "/_stats":
            await _json(send, 200, {"requests": self.requests, "by_mode": self.by_mode, "last_body": self.last_body})
        elif path in ("/v1/chat/completions", "/v1/completions"):
            await self._generate(send, payload, chat=path.endswith("chat/completions"))
        else:
            await _json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found", "code": None}})

    async def _generate(self, send: Any, payload: dict[str, Any], chat: bool) -> None:
        self.requests += 1
        self.last_body = payload
        mode = self._take_mode()
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        if mode == "status":
            await _json(
                send,
                self.status,
                {"error": {"message": f"injected {self.status}", "type": "fault", "code": self.status}},
            )
            return
        if mode == "hang":
            await asyncio.sleep(3600)
        words = REPLY.split()[: int(payload.get("max_tokens") or 64)]
        usage = {
            "prompt_tokens": estimate_tokens(json.dumps(payload.get("messages") or payload.get("prompt"))),
            "completion_tokens": len(words),
        }
        if not payload.get("stream"):
            text = " ".join(words)
            whole: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
            whole.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            await _json(send, 200, {"object": "chat.completion", "choices": [whole], "usage": usage})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        if mode == "hang_after_headers":
            await asyncio.sleep(3600)
        for i, word in enumerate(words):
            if mode == "drop" and i == 2:
                raise ConnectionAbortedError("injected mid-stream drop")  # uvicorn cuts the connection
            text = word if i == 0 else " " + word
            choice: dict[str, Any] = {"index": 0, "finish_reason": None}
            choice.update({"delta": {"content": text}} if chat else {"text": text})
            await _event(send, {"object": "chat.completion.chunk", "choices": [choice]})
            await asyncio.sleep(self.delay_s if mode == "slow" else 0)
        tail: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
        end: dict[str, Any] = {"index": 0, "finish_reason": "stop", **tail}
        await _event(send, {"object": "chat.completion.chunk", "choices": [end]})
        await _event(send, {"object": "chat.completion.chunk", "choices": [], "usage": usage})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _event(send: Any, payload: dict[str, Any]) -> None:
    await send(
        {"type": "http.response.body", "body": b"data: " + json.dumps(payload).encode() + b"\n\n", "more_body": True}
    )


app = FaultEngine()


def main() -> None:
    """Serve the fault engine on 127.0.0.1 (``--port``)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
