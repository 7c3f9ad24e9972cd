"""What an evaluation runs against: a gateway over HTTP (``sovereign eval run``) or the gateway's own
parts in process (a rollout's evaluation gate, run by the controller).

Both implement :class:`EvalTarget`. Answers are generated at temperature 0 with the response cache
off, so a run measures the model, not the cache; ``deployment`` pins one deployment of a routed
model (``X-Sovereign-Deployment`` over HTTP, which needs an admin key).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
import orjson
from httpx_sse import aconnect_sse

from sovereign.backends.base import EmbeddingBackend
from sovereign.backends.registry import ModelRegistry
from sovereign.errors import EngineUnavailableError, SovereignError
from sovereign.rag.models import ANONYMOUS
from sovereign.rag.service import RagService
from sovereign.types import DEPLOYMENT_HEADER, ChatMessage, GenerationRequest, SamplingParams


@dataclass(slots=True)
class Answer:
    """One generated answer. ``sources``: the pipeline's ``sovereign.sources`` (empty for a plain
    model); ``metadata``: the whole ``sovereign`` field; ``ttft_s``/``latency_s`` in seconds."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    latency_s: float
    sources: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


class EvalTarget(Protocol):
    """The gateway as an evaluation sees it."""

    async def served_models(self) -> set[str]:
        """Public chat model names (aliases included)."""

    async def model_info(self, model: str) -> dict[str, Any]:
        """``{"id", "owned_by", "context_window"}`` of a served model (logged with a run)."""

    async def search(self, question: str, *, top_k: int, collection: str | None) -> list[dict[str, Any]]:
        """Ranked chunks: ``{chunk_id, doc_id, path, title, heading, score, text}``. Raises SovereignError."""

    async def answer(self, question: str, *, model: str, deployment: str | None, max_tokens: int) -> Answer:
        """One answer at temperature 0, cache off. Raises SovereignError (engine errors, bad deployment)."""

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Unit vectors ``[len(texts), dim]`` and tokens used (the validator's embedder)."""

    async def corpus(self, collection: str | None) -> dict[str, Any]:
        """``{"documents": n, "sha256": ...}``: a hash over the sorted (path, content hash) pairs."""


PAGE = 1000


async def corpus_digest(page: Callable[[int], Awaitable[list[tuple[str, str]]]]) -> dict[str, Any]:
    """``{"documents", "sha256"}`` over every (path, content_hash) pair, order-independent; ``page(offset)``
    returns up to :data:`PAGE` pairs of the document listing from ``offset``."""
    pairs: list[tuple[str, str]] = []
    while True:
        found = await page(len(pairs))
        pairs += found
        if len(found) < PAGE:
            break
    digest = hashlib.sha256()
    for path, content in sorted(pairs):
        digest.update(f"{path}\0{content}\n".encode())
    return {"documents": len(pairs), "sha256": digest.hexdigest()}


class GatewayTarget:
    """A running gateway at ``base_url`` with ``api_key`` (an admin key when a deployment is pinned).

    Raises (every method): EngineUnavailableError when nothing answers; SovereignError with the
    gateway's own message for an error response.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 600.0,
                 embedding_model: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s)
        self.embedding_model = embedding_model
        self.name = "gateway"

    async def close(self) -> None:
        await self.client.aclose()

    def _unreachable(self, exc: Exception) -> EngineUnavailableError:
        return EngineUnavailableError(f"No gateway answers at {self.client.base_url} ({type(exc).__name__}).")

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        body: dict[str, Any] = response.json() if response.headers.get("content-type", "").startswith(
            "application/json") else {}
        if response.status_code >= 400:
            raise SovereignError(f"{method} {path}: HTTP {response.status_code}: "
                                 f"{body.get('error', {}).get('message', response.text[:200])}")
        return body

    async def _models(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/v1/models"))["data"])

    async def served_models(self) -> set[str]:
        return {m["id"] for m in await self._models() if "capabilities" in m}

    async def model_info(self, model: str) -> dict[str, Any]:
        row = await self._call("GET", f"/v1/models/{model}")
        return {"id": row["id"], "owned_by": row.get("owned_by"), "context_window": row.get("context_window")}

    async def search(self, question: str, *, top_k: int, collection: str | None) -> list[dict[str, Any]]:
        body = await self._call("POST", "/v1/search", json={"query": question, "top_k": top_k,
                                                             "collection": collection})
        return list(body["data"])

    async def answer(self, question: str, *, model: str, deployment: str | None, max_tokens: int) -> Answer:
        payload = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                   "temperature": 0, "seed": 0, "stream": True, "stream_options": {"include_usage": True},
                   "cache": "off"}
        headers = {DEPLOYMENT_HEADER: deployment} if deployment else {}
        began = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        finish = "stop"
        usage: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        try:
            async with aconnect_sse(self.client, "POST", "/v1/chat/completions", json=payload,
                                    headers=headers) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    message = source.response.json().get("error", {}).get("message", source.response.text[:200])
                    raise SovereignError(f"{model}: HTTP {source.response.status_code}: {message}")
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        break
                    chunk = orjson.loads(event.data)
                    if "error" in chunk:
                        raise SovereignError(f"{model}: {chunk['error'].get('message')}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            ttft = ttft if ttft is not None else time.perf_counter() - began
                            parts.append(text)
                        finish = choice.get("finish_reason") or finish
                    usage = chunk.get("usage") or usage
                    meta = chunk.get("sovereign") or meta
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return Answer(text="".join(parts), finish_reason=finish, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                      completion_tokens=int(usage.get("completion_tokens", 0)), ttft_s=ttft,
                      latency_s=time.perf_counter() - began, sources=list(meta.get("sources", [])), metadata=meta)

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        if self.embedding_model is None:
            names = [m["id"] for m in await self._models() if "capabilities" not in m]
            if not names:
                raise SovereignError("The gateway serves no embedding model (the validator needs one).")
            self.embedding_model = names[0]
        body = await self._call("POST", "/v1/embeddings", json={"model": self.embedding_model, "input": list(texts)})
        vectors = np.asarray([row["embedding"] for row in body["data"]], dtype=np.float32)
        return vectors, int(body["usage"]["prompt_tokens"])

    async def corpus(self, collection: str | None) -> dict[str, Any]:
        async def page(offset: int) -> list[tuple[str, str]]:
            params = {"limit": PAGE, "offset": offset, **({"collection": collection} if collection else {})}
            return [(d["path"], d["content_hash"]) for d in (await self._call("GET", "/v1/documents",
                                                                              params=params))["data"]]

        return await corpus_digest(page)


class InProcessTarget:
    """The gateway's own registry and document memory, called directly (no HTTP, no auth, no cache):
    how the rollout controller runs an evaluation gate. ``tenant`` scopes the documents searched."""

    def __init__(self, registry: ModelRegistry, rag: RagService | None, *, tenant: str | None = None) -> None:
        self.registry = registry
        self.rag = rag
        self.tenant = tenant

    def _rag(self) -> RagService:
        if self.rag is None:
            raise SovereignError("Document memory is off (rag.enabled); an evaluation needs it to search.")
        return self.rag

    async def served_models(self) -> set[str]:
        return {m.id for m in self.registry.models() if m.capabilities is not None}

    async def model_info(self, model: str) -> dict[str, Any]:
        info = self.registry.model(model)
        caps = info.capabilities
        return {"id": info.id, "owned_by": info.owned_by, "context_window": caps.context_window if caps else None,
                "engine": caps.engine if caps else None}

    async def search(self, question: str, *, top_k: int, collection: str | None) -> list[dict[str, Any]]:
        hits = await self._rag().retriever_for(self.tenant or ANONYMOUS).search(
            question, top_k=top_k, collection=collection)
        return [{**h.source(), "text": h.text} for h in hits]

    async def answer(self, question: str, *, model: str, deployment: str | None, max_tokens: int) -> Answer:
        backend = self.registry.chat(model)
        request = GenerationRequest(model=model, messages=(ChatMessage("user", question),), tenant=self.tenant,
                                    sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0),
                                    deployment=deployment)
        began = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        finish, prompt, completion, meta = "stop", 0, 0, {}
        async for chunk in backend.stream(request):
            if chunk.text:
                ttft = ttft if ttft is not None else time.perf_counter() - began
                parts.append(chunk.text)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
                prompt, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                meta = dict(chunk.metadata or {})
        return Answer(text="".join(parts), finish_reason=finish, prompt_tokens=prompt, completion_tokens=completion,
                      ttft_s=ttft, latency_s=time.perf_counter() - began, sources=list(meta.get("sources", [])),
                      metadata=meta)

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        embedder: EmbeddingBackend = self._rag().embedder
        return await embedder.embed(texts)

    async def corpus(self, collection: str | None) -> dict[str, Any]:
        store = self._rag().store

        async def page(offset: int) -> list[tuple[str, str]]:
            docs = await store.list_documents(collection, limit=PAGE, offset=offset, tenant=self.tenant or ANONYMOUS)
            return [(d.path, d.content_hash) for d in docs]

        return await corpus_digest(page)
