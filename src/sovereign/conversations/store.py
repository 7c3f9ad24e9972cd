"""The conversation store Protocol and its records (engine-neutral, storage-neutral).

Every conversation belongs to the tenant that created it (the opaque caller identity of
:func:`sovereign.server.state.tenant_of`; :data:`ANONYMOUS` without API keys and for conversations
stored before tenants existed). Every method takes the caller's ``tenant``; another tenant's
conversation id is answered as unknown (NotFoundError, 404), never as forbidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sovereign.errors import InvalidRequestError, NotFoundError
from sovereign.types import ChatMessage, Role

ANONYMOUS = "anonymous"
"""The tenant without API keys, and of conversations stored before tenants (same value as
:data:`sovereign.rag.models.ANONYMOUS`; this room does not depend on rag)."""
MAX_LISTED = 1000  # most conversations one ``recent`` call returns


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
    """A session: its id (32 hex chars), the model name it talks to, its creation time (Unix s) and
    the tenant that owns it."""

    id: str
    model: str
    created_at: float
    tenant: str = ANONYMOUS


def check_limit(limit: int) -> int:
    """``limit`` if in 1..:data:`MAX_LISTED`. Raises InvalidRequestError otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTED:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_LISTED}, got {limit!r}.", param="limit")
    return limit


def unknown(conversation_id: str) -> NotFoundError:
    """The error for a conversation the caller does not have (absent or another tenant's: same text)."""
    return NotFoundError(f"Conversation {conversation_id!r} does not exist; create one first.",
                         param="conversation_id")


class ConversationStore(Protocol):
    """Sessions and messages, per tenant. Every method raises StorageError when the database fails.

    ``tenant`` (keyword, default :data:`ANONYMOUS`) is the caller's; a conversation of another
    tenant is "unknown" to every method. ``schema_version`` is the number of schema migrations
    applied to the database (for ``doctor``).
    """

    schema_version: int

    async def create(self, model: str, *, tenant: str = ANONYMOUS) -> Conversation:
        """A new, empty conversation owned by ``tenant``."""

    async def get(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> Conversation:
        """The conversation. Raises NotFoundError (404) when ``tenant`` has no such conversation."""

    async def append(
        self, conversation_id: str, role: Role, content: str, deployment: str | None = None, *,
        tenant: str = ANONYMOUS,
    ) -> StoredMessage:
        """Add a turn at the end. Raises NotFoundError for a conversation ``tenant`` does not have."""

    async def messages(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> list[StoredMessage]:
        """Every turn in order. Raises NotFoundError for a conversation ``tenant`` does not have."""

    async def recent(self, *, tenant: str = ANONYMOUS, limit: int = 100) -> list[Conversation]:
        """``tenant``'s conversations, newest first, at most ``limit`` (1..:data:`MAX_LISTED`)."""

    async def delete(self, conversation_id: str, *, tenant: str = ANONYMOUS) -> None:
        """Delete the conversation and its messages. Raises NotFoundError as :meth:`get`."""

    async def close(self) -> None:
        """Release connections."""
