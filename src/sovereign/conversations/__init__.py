"""Conversations: sessions and their messages, persisted so a conversation survives engine switches.

:func:`open_store` picks the backend from ``[backends]``: SQLite in WAL mode under ``data_dir``
(default) or PostgreSQL through psycopg 3 (``conversations_dsn_env`` names the DSN's variable).
Both implement :class:`~sovereign.conversations.store.ConversationStore`.
"""

from __future__ import annotations

from sovereign.config import Settings, resolve_secret
from sovereign.conversations.store import Conversation, ConversationStore, StoredMessage
from sovereign.errors import ConfigError
from sovereign.extras import require

__all__ = ["Conversation", "ConversationStore", "StoredMessage", "open_store"]


async def open_store(settings: Settings) -> ConversationStore:
    """Open (and migrate) the configured store.

    Raises:
        ConfigError: postgres chosen without a DSN. StorageError: the database failed.
    """
    backends = settings.backends
    if backends.conversations_store == "postgres":
        dsn = resolve_secret(backends.conversations_dsn_env)
        if not dsn:
            raise ConfigError("backends.conversations_store is postgres: set conversations_dsn_env to a DSN variable.")
        require("psycopg", extra="pgvector", feature="the PostgreSQL conversation store")
        from sovereign.conversations.postgres import PostgresConversationStore

        return await PostgresConversationStore.open(dsn)
    from sovereign.conversations.sqlite import SqliteConversationStore

    return await SqliteConversationStore.open(settings.data_dir / "conversations.sqlite3")
