"""API keys: ``sk-sov-<id>.<secret>``, stored as HMAC-SHA256(server secret, secret), never in clear.

A key has an ``id`` (12 hex characters, public, shown by ``keys list``), a ``name``, a ``scope``
(``user``: the OpenAI-compatible API; ``admin``: also the admin API), a ``tenant`` (whose
documents, conversations and cache entries it sees), optional ``rpm`` / ``tpm`` limits, an
optional model allow-list, and an optional expiry. The plaintext is returned once, at creation.

Verification looks the row up by id and compares ``HMAC-SHA256(secret)`` with
:func:`hmac.compare_digest` (constant time; RFC 2104 HMAC, as the OWASP password storage cheat
sheet advises for high-entropy secrets, where a slow hash such as argon2 buys nothing). The server
secret comes from the env var named by ``security.secret_env`` or ``data_dir/secret.key`` (32
random bytes, created 0600 on first use): back it up with the database, or restored keys no
longer verify. Rows are cached ``security.key_cache_s`` seconds, so a revocation takes effect
within that time on every process.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cachetools import TTLCache

from sovereign.errors import ConfigError, InvalidRequestError, NotFoundError
from sovereign.flags.store import ControlStore

Scope = Literal["user", "admin"]
PREFIX = "sk-sov-"
_TOKEN = re.compile(rf"^{PREFIX}([0-9a-f]{{12}})\.([A-Za-z0-9_-]{{20,128}})$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: key id (``env-N`` for env keys, ``anonymous`` in open mode), scope, tenant,
    limits (None = unlimited) and the models it may use (None = all)."""

    key_id: str
    scope: Scope
    tenant: str
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


ANONYMOUS = Principal("anonymous", "admin", "anonymous")


def server_secret(data_dir: Path, env_name: str | None) -> bytes:
    """The HMAC key: the env var ``env_name`` (UTF-8) when set, else ``data_dir/secret.key``
    (created with 32 random bytes, mode 0600). Raises ConfigError when the env var is empty."""
    if env_name:
        value = os.environ.get(env_name, "")
        if not value:
            raise ConfigError(f"security.secret_env names {env_name}, which is unset or empty.")
        return value.encode()
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
    return path.read_bytes()


def digest(secret_key: bytes, secret: str) -> str:
    """HMAC-SHA256 of ``secret`` under ``secret_key``, hex (64 characters)."""
    return hmac.new(secret_key, secret.encode(), hashlib.sha256).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a Sovereign key, or None when ``token`` is not one."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


class KeyRing:
    """Creates, lists, revokes and verifies stored keys.

    Args:
        store: the control database (``sovereign_api_keys``).
        secret_key: the server secret (:func:`server_secret`).
        cache_s: seconds a row looked up for verification is reused.
    """

    def __init__(self, store: ControlStore, secret_key: bytes, cache_s: float = 2.0) -> None:
        self.store = store
        self._secret = secret_key
        self._rows: TTLCache[str, dict[str, Any] | None] = TTLCache(maxsize=10_000, ttl=cache_s)
        self._count: TTLCache[str, int] = TTLCache(maxsize=1, ttl=cache_s)

    async def create(self, name: str, *, scope: Scope = "user", tenant: str | None = None, rpm: int | None = None,
                     tpm: int | None = None, models: list[str] | None = None,
                     expires_in_s: float | None = None) -> tuple[str, dict[str, Any]]:
        """A new key: ``(plaintext, row)``; the plaintext is not stored anywhere.

        Raises:
            InvalidRequestError: empty name, unknown scope, limits below 1, expiry not in the future.
        """
        if not name.strip() or scope not in ("user", "admin"):
            raise InvalidRequestError("A key needs a name and a scope of user or admin.", param="scope")
        if any(v is not None and v < 1 for v in (rpm, tpm)) or (expires_in_s is not None and expires_in_s <= 0):
            raise InvalidRequestError("Limits must be at least 1 and an expiry in the future.", param="rpm")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        row = {"id": key_id, "name": name, "hash": digest(self._secret, secret), "scope": scope,
               "tenant": tenant or name, "rpm": rpm, "tpm": tpm, "models": models, "created_at": now,
               "expires_at": now + expires_in_s if expires_in_s else None, "revoked_at": None}
        await self.store.put_key(row)
        self._count.clear()
        return f"{PREFIX}{key_id}.{secret}", {k: v for k, v in row.items() if k != "hash"}

    async def list(self) -> list[dict[str, Any]]:
        """Every key without its hash, oldest first."""
        return [{k: v for k, v in row.items() if k != "hash"} for row in await self.store.keys()]

    async def revoke(self, key_id: str) -> None:
        """Revoke ``key_id``. Raises NotFoundError when no active key has that id."""
        if not await self.store.revoke_key(key_id, time.time()):
            raise NotFoundError(f"No active key with id {key_id!r}; `sovereign keys list` shows them.", param="id")
        self._rows.pop(key_id, None)

    async def active_count(self) -> int:
        """Keys neither revoked nor expired (cached like rows)."""
        if "n" not in self._count:
            now = time.time()
            self._count["n"] = sum(1 for r in await self.store.keys()
                                   if r["revoked_at"] is None and (r["expires_at"] is None or r["expires_at"] > now))
        return self._count["n"]

    async def verify(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked, unexpired key, else None (never says why)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        if key_id not in self._rows:
            rows = await self.store.keys(key_id)
            self._rows[key_id] = rows[0] if rows else None
        row = self._rows[key_id]
        expected = row["hash"] if row else digest(self._secret, "")
        valid = hmac.compare_digest(digest(self._secret, secret), expected)  # compared even for unknown ids
        if row is None or not valid or row["revoked_at"] is not None:
            return None
        if row["expires_at"] is not None and row["expires_at"] <= time.time():
            return None
        models = tuple(row["models"]) if row["models"] else None
        return Principal(row["id"], row["scope"], row["tenant"], row["rpm"], row["tpm"], models)
