"""Durable control state shared by every gateway process: flag values set at run time, rollouts,
an audit log of every step, analysis and decision, the controller's lease, and API keys (hashed).

One schema, written in SQL that SQLite (3.24+: ``ON CONFLICT DO UPDATE``) and PostgreSQL both
run, on two runners: :class:`SqliteControlStore` (``data_dir/control.sqlite3``, shared by the
uvicorn workers of one host through WAL) and :class:`PostgresControlStore` (several hosts on one
database). Versioned by :data:`SQLITE_MIGRATIONS` / :data:`POSTGRES_MIGRATIONS` (store ``control``).

Tables: ``sovereign_flag_values(name, value JSON, actor, updated_at)``,
``sovereign_rollouts(target, spec JSON, state JSON, updated_at)``,
``sovereign_control_audit(at, actor, target, kind, detail JSON)``,
``sovereign_leases(name, owner, expires_at)`` and ``sovereign_api_keys(id, name, hash, scope,
tenant, rpm, tpm, models JSON, created_at, expires_at, revoked_at)`` (migration 2); times are Unix
seconds.

Errors: database failures raise :class:`~sovereign.errors.StorageError`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol

from sovereign.errors import StorageError
from sovereign.storage import Migrations, PostgresStep, SqliteStep, SqliteWorker, execute_script

Row = tuple[Any, ...]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sovereign_flag_values (
    name TEXT PRIMARY KEY, value TEXT NOT NULL, actor TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS sovereign_rollouts (
    target TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS sovereign_control_audit (
    at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sovereign_control_audit_target ON sovereign_control_audit (target, at);
CREATE TABLE IF NOT EXISTS sovereign_leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)
"""
SQLITE_MIGRATIONS: Migrations[SqliteStep] = Migrations("control")
POSTGRES_MIGRATIONS: Migrations[PostgresStep] = Migrations("control")


@SQLITE_MIGRATIONS.step
def m001_initial(conn: sqlite3.Connection) -> None:
    """Flag values, rollouts, the audit log and leases."""
    execute_script(conn, SCHEMA)


@POSTGRES_MIGRATIONS.step
async def m001_initial_pg(conn: Any) -> None:
    """Flag values, rollouts, the audit log and leases."""
    await conn.execute(SCHEMA)


KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sovereign_api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, scope TEXT NOT NULL, tenant TEXT NOT NULL,
    rpm INTEGER, tpm INTEGER, models TEXT, created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION, revoked_at DOUBLE PRECISION)
"""
KEY_COLUMNS = ("id", "name", "hash", "scope", "tenant", "rpm", "tpm", "models", "created_at", "expires_at",
               "revoked_at")


@SQLITE_MIGRATIONS.step
def m002_api_keys(conn: sqlite3.Connection) -> None:
    """API keys: only an HMAC-SHA256 of each secret is stored (sovereign.security.keys)."""
    execute_script(conn, KEYS_SCHEMA)


@POSTGRES_MIGRATIONS.step
async def m002_api_keys_pg(conn: Any) -> None:
    """API keys: only an HMAC-SHA256 of each secret is stored (sovereign.security.keys)."""
    await conn.execute(KEYS_SCHEMA)


class ControlStore(Protocol):
    """What the flag service and the rollout controller need from durable state."""

    async def flag_values(self) -> dict[str, dict[str, Any]]:
        """Run-time overrides by flag name (partial :class:`~sovereign.flags.model.Flag` fields)."""
        ...

    async def set_flag_value(self, name: str, value: dict[str, Any], actor: str) -> None: ...

    async def rollouts(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Every rollout by target: ``(spec, state)`` as stored."""
        ...

    async def save_rollout(self, target: str, spec: dict[str, Any], state: dict[str, Any]) -> None: ...

    async def audit(self, target: str, kind: str, detail: dict[str, Any], actor: str) -> None: ...

    async def events(self, target: str | None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ``limit`` audit events (of ``target``, or all), oldest first."""
        ...

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew lease ``name`` for ``owner`` for ``ttl_s`` seconds; False while another holds it."""
        ...

    async def put_key(self, row: dict[str, Any]) -> None:
        """Insert an API key row (:data:`KEY_COLUMNS`; ``models`` a list or None)."""
        ...

    async def keys(self, key_id: str | None = None) -> list[dict[str, Any]]:
        """Every API key row (or the one with ``key_id``), oldest first."""
        ...

    async def revoke_key(self, key_id: str, at: float) -> bool:
        """Mark ``key_id`` revoked at ``at``; False when no such key, or already revoked."""
        ...

    async def close(self) -> None: ...


class _SqlControlStore(ABC):
    """The store's logic over ``_query(sql, params) -> rows`` (``?`` placeholders)."""

    schema_version = 0

    @abstractmethod
    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        """Run one statement (autocommit); its rows, or [] for a statement without a result."""

    async def flag_values(self) -> dict[str, dict[str, Any]]:
        rows = await self._query("SELECT name, value FROM sovereign_flag_values")
        return {name: json.loads(value) for name, value in rows}

    async def set_flag_value(self, name: str, value: dict[str, Any], actor: str) -> None:
        await self._query(
            "INSERT INTO sovereign_flag_values VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "value = excluded.value, actor = excluded.actor, updated_at = excluded.updated_at",
            (name, json.dumps(value), actor, time.time()))

    async def rollouts(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        rows = await self._query("SELECT target, spec, state FROM sovereign_rollouts")
        return {target: (json.loads(spec), json.loads(state)) for target, spec, state in rows}

    async def save_rollout(self, target: str, spec: dict[str, Any], state: dict[str, Any]) -> None:
        await self._query(
            "INSERT INTO sovereign_rollouts VALUES (?, ?, ?, ?) ON CONFLICT (target) DO UPDATE SET "
            "spec = excluded.spec, state = excluded.state, updated_at = excluded.updated_at",
            (target, json.dumps(spec), json.dumps(state), time.time()))

    async def audit(self, target: str, kind: str, detail: dict[str, Any], actor: str) -> None:
        await self._query("INSERT INTO sovereign_control_audit VALUES (?, ?, ?, ?, ?)",
                          (time.time(), actor, target, kind, json.dumps(detail)))

    async def events(self, target: str | None, limit: int = 100) -> list[dict[str, Any]]:
        where, params = ("WHERE target = ?", (target,)) if target else ("", ())
        rows = await self._query(
            f"SELECT at, actor, target, kind, detail FROM sovereign_control_audit {where} "
            "ORDER BY at DESC LIMIT ?", (*params, limit))
        return [{"at": at, "actor": actor, "target": t, "kind": kind, "detail": json.loads(detail)}
                for at, actor, t, kind, detail in reversed(rows)]

    async def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        await self._query(
            "INSERT INTO sovereign_leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE sovereign_leases.owner = excluded.owner OR sovereign_leases.expires_at < ?",
            (name, owner, now + ttl_s, now))
        rows = await self._query("SELECT owner FROM sovereign_leases WHERE name = ?", (name,))
        return bool(rows) and rows[0][0] == owner


    async def put_key(self, row: dict[str, Any]) -> None:
        values = [json.dumps(row[c]) if c == "models" and row[c] is not None else row[c] for c in KEY_COLUMNS]
        await self._query(f"INSERT INTO sovereign_api_keys ({', '.join(KEY_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(KEY_COLUMNS))})", tuple(values))

    async def keys(self, key_id: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE id = ?", (key_id,)) if key_id else ("", ())
        rows = await self._query(f"SELECT {', '.join(KEY_COLUMNS)} FROM sovereign_api_keys {where} "
                                 "ORDER BY created_at", params)
        out = [dict(zip(KEY_COLUMNS, row, strict=True)) for row in rows]
        for row in out:
            row["models"] = json.loads(row["models"]) if row["models"] else None
        return out

    async def revoke_key(self, key_id: str, at: float) -> bool:
        before = await self.keys(key_id)
        if not before or before[0]["revoked_at"] is not None:
            return False
        await self._query("UPDATE sovereign_api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                          (at, key_id))
        return True


class SqliteControlStore(_SqlControlStore):
    """:class:`ControlStore` on one SQLite file (autocommit: every statement is its own transaction)."""

    def __init__(self, worker: SqliteWorker, schema_version: int) -> None:
        self._worker = worker
        self.schema_version = schema_version

    @classmethod
    async def open(cls, path: Path) -> SqliteControlStore:
        """Create and migrate ``path``. Raises StorageError, or ConfigError for a newer schema."""
        worker = SqliteWorker(path, label=f"the control database {path}", thread_name="control")
        await worker.aopen()
        try:
            version = await worker.run(SQLITE_MIGRATIONS.apply)
        except BaseException:
            await worker.aclose()
            raise
        return cls(worker, version)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        return await self._worker.run(lambda c: c.execute(sql, params).fetchall())

    async def close(self) -> None:
        await self._worker.aclose()


class PostgresControlStore(_SqlControlStore):
    """:class:`ControlStore` on PostgreSQL (psycopg 3 pool; ``?`` becomes ``%s``)."""

    def __init__(self, pool: Any, schema_version: int) -> None:
        self._pool = pool
        self.schema_version = schema_version

    @classmethod
    async def open(cls, dsn: str) -> PostgresControlStore:
        """Connect and migrate. Raises StorageError, or ConfigError for a newer schema."""
        from sovereign.extras import require

        require("psycopg_pool", extra="pgvector", feature="control state on PostgreSQL")
        import psycopg
        import psycopg_pool

        pool = psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
        try:
            await pool.open(wait=True, timeout=10)
            async with pool.connection() as conn:
                version = await POSTGRES_MIGRATIONS.apply_async(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            await pool.close()
            raise StorageError(f"Cannot open the PostgreSQL control store: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        return cls(pool, version)

    async def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        import psycopg

        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(sql.replace("?", "%s"), params)
                return list(await cur.fetchall()) if cur.description else []
        except psycopg.Error as exc:
            raise StorageError(f"Control store failed: {exc}") from exc

    async def close(self) -> None:
        await self._pool.close()


async def open_control_store(sqlite_path: Path, postgres_dsn: str | None) -> ControlStore:
    """PostgreSQL when ``postgres_dsn`` is given, else SQLite at ``sqlite_path``."""
    if postgres_dsn:
        return await PostgresControlStore.open(postgres_dsn)
    return await SqliteControlStore.open(sqlite_path)


