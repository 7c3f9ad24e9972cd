"""A throwaway third-party plugin: one module, installed through the ``sovereign`` entry point.

It adds an engine kind (``echo``: answers with the user's words), a vector store and a cache
backend (``scratch``: the embedded ones kept in other files), a document format (``.csv``) and a
CLI command, exactly as a package on PyPI would, with no edit to Sovereign's code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from sovereign.backends.base import Capabilities, resolve_max_tokens
from sovereign.errors import UnsupportedParameterError
from sovereign.hookspecs import hookimpl
from sovereign.rag.loaders import LoadedDocument, Loader, Section
from sovereign.types import GenerationChunk, GenerationRequest, Usage

WINDOW = 256


class EchoEngine:
    """A ChatBackend that streams the last user message back, one word per token."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ready = False

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(context_window=WINDOW, json_mode=False, completions=False, engine="echo",
                            owned_by="echo-plugin")

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        self._ready = True

    async def close(self) -> None:
        self._ready = False

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return sum(len(m.content.split()) + 1 for m in request.messages)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if not request.is_chat:
            raise UnsupportedParameterError("echo serves chat only.", param="prompt")
        prompt = await self.count_prompt_tokens(request)
        budget = resolve_max_tokens(prompt, request.sampling.max_tokens, WINDOW, 64)
        words = request.messages[-1].content.split()[:budget]
        for i, word in enumerate(words):
            yield GenerationChunk(word if i == 0 else " " + word, Usage(prompt, i + 1))
        yield GenerationChunk("", Usage(prompt, len(words)), "length" if len(words) == budget else "stop")


def load_csv(data: bytes, name: str) -> LoadedDocument:
    rows = data.decode().splitlines()
    return LoadedDocument(title=name, sections=[Section(rows[0], "\n".join(rows[1:]))], metadata={"format": "csv"})


@hookimpl
def register_engines(register: Callable[[str, Any], None]) -> None:
    register("echo", lambda deployment, context: EchoEngine(deployment.name))


@hookimpl
def register_vector_stores(register: Callable[[str, Any], None]) -> None:
    from sovereign.rag.stores.embedded import EmbeddedStore

    register("scratch", lambda settings, dimensions: EmbeddedStore(settings.data_dir / "scratch-rag", dimensions))


@hookimpl
def register_cache_backends(register: Callable[[str, Any], None]) -> None:
    from sovereign.cache.backends.sqlite import SqliteCacheBackend

    register("scratch", lambda settings: SqliteCacheBackend(settings.data_dir / "scratch-cache.sqlite3",
                                                            max_entries=settings.cache.max_entries))


@hookimpl
def register_loaders(register: Callable[[str, Loader], None]) -> None:
    register("csv", Loader(frozenset({".csv"}), load_csv))


@hookimpl
def register_commands(cli: Any) -> None:
    @cli.command("echo-hello")
    def echo_hello() -> None:
        """Say hello from the echo plugin."""
        print("hello from the echo plugin")
