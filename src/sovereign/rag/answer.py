"""``sovereign-rag``: a chat model that answers from the document memory with numbered citations.

``stream()`` takes the last user message as the question, retrieves the best chunks (hybrid search),
packs as many as fit into the chat model's context budget (tokens counted with the chat backend's
own ``count_prompt_tokens``, chat template included), asks for answers citing sources as ``[1]``,
``[2]`` and delegates generation to the embedded chat backend. The final chunk's ``metadata`` is
``{"sources": [...], "collection": ..., "index_version": ..., "citations_attributed": n}`` (the
response's ``sovereign`` field; the final SSE chunk when streaming). Source ``n`` in the list is
citation ``[n]`` in the answer; sentences the model left uncited are attributed by
:mod:`sovereign.rag.citations` (``citations_attributed`` counts them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from sovereign.backends.base import Capabilities, ChatBackend
from sovereign.errors import InvalidRequestError, NotFoundError
from sovereign.rag.citations import CitationAttributor
from sovereign.rag.models import Retriever, SearchHit
from sovereign.rag.retrieve import check_top_k
from sovereign.rag.stores.base import check_collection
from sovereign.types import ChatMessage, GenerationChunk, GenerationRequest

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
        retriever: hybrid search. collection: the collection searched.
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
        return replace(inner, json_mode=False, completions=False, engine=f"rag+{inner.engine}")

    @property
    def ready(self) -> bool:
        return self._inner().ready

    async def start(self) -> None:
        await self._inner().start()

    async def close(self) -> None:
        """Nothing of its own to release; the inner model is closed by the registry."""

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        prompt, _ = await self._build(request)
        return await self._inner().count_prompt_tokens(prompt)

    async def ensure_collection(self) -> None:
        """Raise NotFoundError when the collection has never been written to (index version 0)."""
        if await self.retriever.index_version(self.collection) == 0:
            raise NotFoundError(f"Unknown collection {self.collection!r}; ingest documents into it first "
                                "(sovereign ingest PATH --collection NAME).", param="collection")

    async def _hits(self, question: str) -> Sequence[SearchHit]:
        if self.require_collection:
            await self.ensure_collection()
        elif await self.retriever.index_version(self.collection) == 0:
            return []  # the server's chat model before any ingest: answer without sources, not 404
        return await self.retriever.search(question, top_k=self.top_k, collection=self.collection)

    async def _build(self, request: GenerationRequest) -> tuple[GenerationRequest, list[SearchHit]]:
        """The inner request with as many retrieved chunks as fit, and the chunks used (in order).

        Raises:
            InvalidRequestError: not a chat request, or no user message to answer.
        """
        if not request.is_chat:
            raise InvalidRequestError(f"{self.name} answers chat requests only; use /v1/chat/completions.",
                                      param="model")
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "").strip()
        if not question:
            raise InvalidRequestError("sovereign-rag needs a user message with a question.", param="messages")
        inner = self._inner()
        hits = list(await self._hits(question))
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
        version = await self.retriever.index_version(self.collection)
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
