"""How the agent pipeline reaches its chat model: through the registry, on every call."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sovereign.backends.base import Capabilities, ChatBackend
from sovereign.backends.registry import ModelRegistry
from sovereign.types import GenerationChunk, GenerationRequest


class RegistryModel:
    """The chat backend serving ``name``, looked up in the registry on every call, so a backend
    swapped in later (the routing plugin's fallback router, a hot swap) is the one the agent uses.
    Implements :class:`~sovereign.backends.base.ChatBackend`; ``close`` is a no-op (the registry
    owns the backend)."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self._registry = registry
        self.name = name

    def _backend(self) -> ChatBackend:
        return self._registry.chat(self.name)

    @property
    def capabilities(self) -> Capabilities:
        return self._backend().capabilities

    @property
    def ready(self) -> bool:
        return self._backend().ready

    async def start(self) -> None:
        await self._backend().start()

    async def close(self) -> None:
        return None

    async def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return await self._backend().count_prompt_tokens(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        return self._backend().stream(request)
