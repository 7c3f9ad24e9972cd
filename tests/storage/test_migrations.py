"""The migration runner on SQLite: order, once only, upgrades, rollback, newer databases, concurrency."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from sovereign.errors import ConfigError
from sovereign.storage import Migrations, SqliteWorker, execute_script

pytestmark = pytest.mark.anyio
Step = Callable[[sqlite3.Connection], None]


def recorded(conn: sqlite3.Connection, store: str = "demo") -> list[str]:
    rows = conn.execute("SELECT name FROM _sovereign_migrations WHERE store = ? ORDER BY rowid", (store,))
    return [r[0] for r in rows]


def demo(calls: list[str]) -> Migrations[Step]:
    """Three steps that create tables and log their names in ``calls`` when they run."""
    migrations: Migrations[Step] = Migrations("demo")

    @migrations.step
    def m001_zeta(conn: sqlite3.Connection) -> None:  # names deliberately not in alphabetical order
        calls.append("m001_zeta")
        execute_script(conn, "CREATE TABLE z (a INTEGER); INSERT INTO z VALUES (1)")

    @migrations.step
    def m002_alpha(conn: sqlite3.Connection) -> None:
        calls.append("m002_alpha")
        conn.execute("ALTER TABLE z ADD COLUMN b TEXT")

    @migrations.step
    def m003_mid(conn: sqlite3.Connection) -> None:
        calls.append("m003_mid")
        conn.execute("CREATE INDEX z_b ON z (b)")

    return migrations


@pytest.mark.parametrize("isolation_level", [None, "DEFERRED"])
def test_steps_run_in_definition_order_once_and_are_recorded(isolation_level: Literal["DEFERRED"] | None) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=isolation_level)
    calls: list[str] = []
    migrations = demo(calls)
    assert migrations.apply(conn) == 3 == migrations.latest
    assert calls == ["m001_zeta", "m002_alpha", "m003_mid"] == recorded(conn)
    assert not conn.in_transaction
    applied_at = conn.execute("SELECT min(applied_at) FROM _sovereign_migrations").fetchone()[0]
    assert abs(applied_at - time.time()) < 60

    assert migrations.apply(conn) == 3  # applying twice is a no-op
    assert calls == ["m001_zeta", "m002_alpha", "m003_mid"]
    assert conn.execute("SELECT count(*) FROM _sovereign_migrations").fetchone()[0] == 3


def test_a_new_step_upgrades_an_older_database() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    calls: list[str] = []
    older: Migrations[Step] = Migrations("demo")
    older.step(demo(calls)._steps[0][1])
    assert older.apply(conn) == 1
    assert demo(calls).apply(conn) == 3
    assert calls == ["m001_zeta", "m002_alpha", "m003_mid"]
    assert conn.execute("SELECT a, b FROM z").fetchall() == [(1, None)]  # data kept through the upgrade


def test_a_failing_step_rolls_back_everything() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrations = demo([])

    @migrations.step
    def m004_broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE broken (")

    with pytest.raises(sqlite3.OperationalError):
        migrations.apply(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "z" not in tables and "_sovereign_migrations" not in tables and not conn.in_transaction


def test_a_migration_from_a_newer_sovereign_is_a_clear_error_and_changes_nothing() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    calls: list[str] = []
    older: Migrations[Step] = Migrations("demo")
    older.step(demo(calls)._steps[0][1])
    demo([]).apply(conn)  # a newer release wrote 3 migrations
    with pytest.raises(ConfigError) as info:
        older.apply(conn)
    message = info.value.message
    assert "demo" in message and "m002_alpha" in message and "written by a newer Sovereign" in message
    assert calls == [] and len(recorded(conn)) == 3 and not conn.in_transaction


def test_stores_share_the_table_but_not_their_versions() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert demo([]).apply(conn) == 3
    other: Migrations[Step] = Migrations("other")

    @other.step
    def m001_other(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE o (a)")

    assert other.apply(conn) == 1
    assert recorded(conn, "demo") == ["m001_zeta", "m002_alpha", "m003_mid"]
    assert recorded(conn, "other") == ["m001_other"]


def test_a_duplicate_step_name_is_refused() -> None:
    migrations: Migrations[Step] = Migrations("demo")

    def m001(conn: sqlite3.Connection) -> None:
        """Nothing."""

    migrations.step(m001)
    with pytest.raises(ValueError, match="defined twice"):
        migrations.step(m001)


async def test_two_connections_migrating_at_once_run_each_step_once(tmp_path: Path) -> None:
    """Two processes (here: two workers, two connections) open one new file at the same moment."""
    calls: list[str] = []
    migrations: Migrations[Step] = Migrations("race")

    @migrations.step
    def m001_slow(conn: sqlite3.Connection) -> None:
        calls.append("m001_slow")
        time.sleep(0.2)  # the other connection arrives while this one holds the write lock
        conn.execute("CREATE TABLE t (a)")

    workers = [SqliteWorker(tmp_path / "race.sqlite3", label=f"race {i}", thread_name=f"race-{i}") for i in (1, 2)]
    for worker in workers:
        await worker.aopen()
    try:
        versions = await asyncio.gather(*(w.run(migrations.apply) for w in workers))
    finally:
        for worker in workers:
            await worker.aclose()
    assert versions == [1, 1] and calls == ["m001_slow"]
