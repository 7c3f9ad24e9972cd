"""``sovereign-rag``: a chat model that answers from the document memory with numbered citations.

``stream()`` takes the last user message as the question, retrieves the best chunks (hybrid search),
packs as many as fit into the chat model's context budget (tokens counted with the chat backend's
own ``count_prompt_tokens``, chat template included), asks for answers citing sources as ``[1]``,
``[2]`` and delegates generation to the embedded chat backend. The final chunk's ``metadata`` is
``{"sources": [...], "collection": ..., "index_version": ..., "citations_attributed": n}`` (the
response's ``sovereign`` field; the final SSE chunk when streaming). Source ``n`` in the list is
citation ``[n]`` in the answer; sentences the model left uncited are attributed by
:mod:`sovereign.rag.citations` (``citations_attributed`` counts them).

Tenancy: the request's ``tenant`` (set by the gateway's request flow) selects whose documents are
searched (:func:`sovereign.rag.models.scoped`); a request without one (the CLI) reads the
retriever's own tenant. ``index_version`` in the metadata is the caller's collection's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sovereign.backends.base import Capabilities, ChatBackend
from sovereign.backends.registry import ModelRegistry
from sovereign.config import Settings
from sovereign.errors import InvalidRequestError, ModelNotFoundError, NotFoundError, SovereignError
from sovereign.rag.citations import CitationAttributor
from sovereign.rag.models import Retriever, SearchHit, TenantScoping, scoped
from sovereign.rag.retrieve import check_top_k
from sovereign.rag.stores.base import check_collection
from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest

if TYPE_CHECKING:
    from sovereign.rag.service import RagService

log = logging.getLogger("sovereign.rag")
RAG_MODEL_NAME = "sovereign-rag"
SYSTEM_PROMPT = (
    "Answer the question using only the numbered sources below. After each statement, cite the "
    "source it comes from as [1], [2], etc. If the sources do not contain the answer, say so.\n\nSources:\n"
)


def format_source(n: int, hit: SearchHit) -> str:
    """One numbered source block of the prompt."""
    where = f"{hit.title} — {hit.heading}" if hit.heading and hit.heading != hit.title else hit.title
    return f"[{n}] {where} ({hit.path})\n{hit.text}\n"


class RagChatBackend:
    """Implements :class:`~sovereign.backends.base.ChatBackend` on a retriever and an inner chat model.

    Args:
        inner: resolves the chat backend that writes the answer (looked up per call, so a hot-swapped
            model is used at once).
        retriever: hybrid search (bound to the tenant used when a request names none; re-bound to
            the request's tenant otherwise). collection: the collection searched.
        top_k: chunks retrieved (1..100). answer_tokens: output budget reserved when the request sets none.
        require_collection: raise NotFoundError when ``collection`` does not exist (``sovereign ask``,
            where the user named it); when False (the server's chat model) an empty or not yet
            created collection is answered without sources.

    Raises:
        InvalidRequestError: ``top_k`` outside 1..100, or an invalid collection name.
    """

    name = RAG_MODEL_NAME

    def __init__(self, inner: Callable[[], ChatBackend], retriever: Retriever, *, collection: str,
                 top_k: int = 5, answer_tokens: int = 256, require_collection: bool = False) -> None:
        check_top_k(top_k)
        self._inner = inner
        self.collection = check_collection(collection)
        self.retriever = retriever
        self.top_k = top_k
        self.answer_tokens = answer_tokens
        self.require_collection = require_collection

    @property
    def capabilities(self) -> Capabilities:
        inner = self._inner().capabilities
        return replace(inner, json_mode=False, json_schema=False, tools=False, logprobs=False, completions=False,
                       engine=f"rag+{inner.engine}")

    @property
    def ready(self) -> bool:
        return self._inner().ready

    async def start(self) -> None:
        await self._inner().start()

    async def close(self) -> None:
        """Nothing of its own to release; the inner model is closed by the registry."""

    async def source_scope(self, metadata: dict[str, str] | None, tenant: str | None = None) -> tuple[str, int]:
        """:class:`~sovereign.backends.base.SourceScoped`: the collection answered from and its index version.

        With ``tenant``, that tenant's version. Without it (the cache cannot say whose answer it
        keys), a version that changes whenever any tenant's collection of that name changes
        (:meth:`~sovereign.rag.models.TenantScoping.shared_version`): never stale, at worst an
        answer is recomputed after another tenant's ingest. The cache key holds the tenant either way.

        Raises:
            LookupError: the store cannot tell the version now.
        """
        try:
            if tenant is None and isinstance(self.retriever, TenantScoping):
                return self.collection, await self.retriever.shared_version(self.collection)
            return self.collection, await scoped(self.retriever, tenant).index_version(self.collection)
        except SovereignError as exc:
            raise LookupError(f"index version of {self.collection!r} unavailable: {exc}") from exc

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        prompt, _ = await self._build(request)
        return await self._inner().count_prompt_tokens(prompt)

    async def ensure_collection(self, retriever: Retriever | None = None) -> None:
        """Raise NotFoundError when the collection has never been written to (index version 0) by
        ``retriever``'s tenant (default: this backend's retriever)."""
        if await (retriever or self.retriever).index_version(self.collection) == 0:
            raise NotFoundError(f"Unknown collection {self.collection!r}; ingest documents into it first "
                                "(sovereign ingest PATH --collection NAME).", param="collection")

    async def _hits(self, question: str, retriever: Retriever) -> Sequence[SearchHit]:
        if self.require_collection:
            await self.ensure_collection(retriever)
        elif await retriever.index_version(self.collection) == 0:
            return []  # the server's chat model before any ingest: answer without sources, not 404
        return await retriever.search(question, top_k=self.top_k, collection=self.collection)

    async def _build(self, request: GenerationRequest) -> tuple[GenerationRequest, list[SearchHit]]:
        """The inner request with as many retrieved chunks as fit, and the chunks used (in order).

        Raises:
            InvalidRequestError: not a chat request, or no user message to answer.
            PermissionDeniedError: the retriever cannot be scoped to the request's tenant.
        """
        if not request.is_chat:
            raise InvalidRequestError(f"{self.name} answers chat requests only; use /v1/chat/completions.",
                                      param="model")
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "").strip()
        if not question:
            raise InvalidRequestError("sovereign-rag needs a user message with a question.", param="messages")
        inner = self._inner()
        hits = list(await self._hits(question, scoped(self.retriever, request.tenant)))
        budget = inner.capabilities.context_window - (request.sampling.max_tokens or self.answer_tokens)
        history = [m for m in request.messages if m.role != "system"]
        used: list[SearchHit] = []

        def render(chosen: list[SearchHit]) -> GenerationRequest:
            blocks = "".join(format_source(i, h) for i, h in enumerate(chosen, 1)) or "(no sources found)\n"
            messages = (ChatMessage("system", SYSTEM_PROMPT + blocks), *history)
            return replace(request, model=inner.name, messages=messages)

        for hit in hits:  # best first; stop at the first chunk that no longer fits
            if await inner.count_prompt_tokens(render([*used, hit])) > budget:
                break
            used.append(hit)
        return render(used), used

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Retrieve, pack, generate; the last chunk carries ``sources``, ``collection``, ``index_version``."""
        prompt, used = await self._build(request)
        version = await scoped(self.retriever, request.tenant).index_version(self.collection)
        metadata = {"sources": [h.source() for h in used], "collection": self.collection,
                    "index_version": version}
        attributor = CitationAttributor([h.text for h in used])
        stream = self._inner().stream(prompt)
        try:
            async for chunk in stream:
                if chunk.finish_reason is None:
                    text = attributor.feed(chunk.text)
                    if text:
                        yield replace(chunk, text=text)
                    continue
                text = attributor.feed(chunk.text) + attributor.flush()
                metadata["citations_attributed"] = attributor.attributed
                yield replace(chunk, text=text, metadata={**(chunk.metadata or {}), **metadata})
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


def rag_pipeline(settings: Settings, registry: ModelRegistry, rag: RagService | None) -> RagChatBackend | None:
    """``sovereign-rag`` over ``rag``'s retriever and the ``[engine]`` model (resolved per call, so
    routing applies); None (logged) without document memory or when that model is not served."""
    model_name = settings.engine.model_name
    if rag is None:
        log.warning("sovereign-rag not served: document memory is off")
        return None
    try:
        registry.chat(model_name)
    except ModelNotFoundError:
        log.warning("sovereign-rag not served: chat model %r is not served", model_name)
        return None
    return RagChatBackend(lambda: registry.chat(model_name), rag.retriever, collection=settings.rag.default_collection,
                          top_k=settings.rag.top_k, answer_tokens=settings.rag.answer_max_tokens)
