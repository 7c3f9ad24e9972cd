"""The conversation store Protocol and its records (engine-neutral, storage-neutral)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sovereign.types import ChatMessage, Role


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One persisted turn: ``seq`` orders turns (0-based), ``deployment`` names who answered (assistant)."""

    seq: int
    role: Role
    content: str
    deployment: str | None
    created_at: float  # Unix seconds

    def to_chat(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A session: its id (32 hex chars), the model name it talks to, and its creation time (Unix s)."""

    id: str
    model: str
    created_at: float


class ConversationStore(Protocol):
    """Sessions and messages. Every method raises StorageError when the database fails.

    ``schema_version`` is the number of schema migrations applied to the database (for ``doctor``).
    """

    schema_version: int

    async def create(self, model: str) -> Conversation:
        """A new, empty conversation."""

    async def get(self, conversation_id: str) -> Conversation:
        """The conversation. Raises NotFoundError (404) when it does not exist."""

    async def append(
        self, conversation_id: str, role: Role, content: str, deployment: str | None = None
    ) -> StoredMessage:
        """Add a turn at the end. Raises NotFoundError for an unknown conversation."""

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        """Every turn in order. Raises NotFoundError for an unknown conversation."""

    async def close(self) -> None:
        """Release connections."""
