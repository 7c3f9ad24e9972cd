"""Fakes for the agent pipeline: an in-memory retriever, a scripted chat model, a bag-of-words
embedder, and node adapters that fail on purpose. Instant (no model, no I/O), so tests and the
orchestration-overhead benchmark measure the pipeline alone."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from sovereign.backends.base import Capabilities
from sovereign.errors import EngineError
from sovereign.rag.models import SearchHit
from sovereign.types import GenerationChunk, GenerationRequest, Usage

_WORD = re.compile(r"[a-z0-9_]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class FakeRetriever:
    """Ranks ``docs`` (``{path: text}``) by word overlap with the query. Records every query."""

    def __init__(self, docs: dict[str, str], *, fail: bool = False, delay_s: float = 0.0) -> None:
        self.docs = docs
        self._terms = {path: set(_words(text)) for path, text in docs.items()}
        self.fail = fail
        self.delay_s = delay_s
        self.queries: list[str] = []

    async def search(
        self, query: str, *, top_k: int, collection: str | None = None, path_glob: str | None = None
    ) -> Sequence[SearchHit]:
        self.queries.append(query)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise EngineError("fake retriever failure")
        terms = set(_words(query))
        scored = sorted(((len(terms & words), path) for path, words in self._terms.items()), reverse=True)
        return [SearchHit(chunk_id=f"c-{path}", doc_id=f"d-{path}", path=path, title=path, text=self.docs[path],
                          score=float(score)) for score, path in scored[:top_k] if score > 0]

    async def index_version(self, collection: str) -> int:
        return 1


class FakeChatModel:
    """Replies with ``reply(request)`` (default: echoes the first source line), word by word.

    ``fail`` raises EngineError on every call; ``calls`` records each request.
    """

    def __init__(self, reply: Callable[[GenerationRequest], str] | str | None = None, *, fail: bool = False,
                 name: str = "fake-model", context_window: int = 4096) -> None:
        self.name = name
        self._reply = reply
        self.fail = fail
        self.calls: list[GenerationRequest] = []
        self._window = context_window

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(context_window=self._window, engine="fake")

    @property
    def ready(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return sum(len(m.content.split()) for m in request.messages)

    def reply_for(self, request: GenerationRequest) -> str:
        if callable(self._reply):
            return self._reply(request)
        if isinstance(self._reply, str):
            return self._reply
        system = request.messages[0].content if request.messages else ""
        match = re.search(r"^\[1\][^\n]*\n([^\n]+)", system, re.M)
        return f"{match.group(1).strip()} [1]" if match else "I do not know."

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.calls.append(request)
        if self.fail:
            raise EngineError("fake model failure")
        prompt = await self.count_prompt_tokens(request)
        words = self.reply_for(request).split(" ")
        for i, word in enumerate(words):
            yield GenerationChunk(text=word if i == 0 else " " + word, usage=Usage(prompt, i + 1))
        yield GenerationChunk(text="", usage=Usage(prompt, len(words)), finish_reason="stop")


class FakeEmbedder:
    """Hashed bag-of-words unit vectors (64 dims): texts sharing words have high cosine."""

    name = "fake-embedder"
    dimensions = 64

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self._cache: dict[str, np.ndarray] = {}

    def _vector(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vector = np.zeros(self.dimensions, dtype=np.float32)
        for word in _words(text):
            vector[int(hashlib.blake2b(word.encode(), digest_size=2).hexdigest(), 16) % self.dimensions] += 1.0
        norm = float(np.linalg.norm(vector))
        vector = vector / norm if norm else vector
        if len(self._cache) < 10_000:
            self._cache[text] = vector
        return vector

    async def close(self) -> None:
        """Nothing to release."""

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        if self.fail:
            raise EngineError("fake embedder failure")
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32), 0
        return np.stack([self._vector(t) for t in texts]), sum(len(_words(t)) for t in texts)

    def count_tokens(self, text: str) -> int:
        return len(_words(text))


def failing_node(kind: str = "error", delay_s: float = 5.0) -> Callable[[Any, Any], Any]:
    """A node adapter that raises (``kind="error"``) or sleeps past any short timeout (``"timeout"``)."""

    async def node(_state: Any, _ctx: Any) -> dict[str, Any]:
        if kind == "timeout":
            await asyncio.sleep(delay_s)
        raise EngineError("forced node failure")

    return node
