"""SqliteWorker: one thread, one connection, the shared PRAGMAs, errors translated."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sovereign.errors import StorageError
from sovereign.storage import SqliteWorker

pytestmark = pytest.mark.anyio


def pragmas(conn: sqlite3.Connection) -> dict[str, object]:
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}


async def test_runs_on_its_thread_with_the_shared_pragmas(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "sub" / "w.sqlite3", label="the test db", thread_name="test-worker")
    await worker.aopen()
    try:
        assert await worker.run(pragmas) == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1,
                                             "busy_timeout": 10000}
        name = await worker.run(lambda conn, suffix: threading.current_thread().name + suffix, "!")
        assert name.startswith("test-worker") and name.endswith("!")
        assert (await worker.run(lambda conn: conn.isolation_level)) is None
    finally:
        await worker.aclose()
    await worker.aclose()  # idempotent
    assert not worker.is_open


async def test_sqlite_errors_become_storage_errors_naming_the_database(tmp_path: Path) -> None:
    worker = SqliteWorker(tmp_path / "w.sqlite3", label="the test db", thread_name="test-worker",
                          isolation_level="DEFERRED")
    worker.open()  # the blocking variant
    try:
        with pytest.raises(StorageError, match=r"^The test db failed: no such table"):
            await worker.run(lambda conn: conn.execute("SELECT * FROM missing"))
        with pytest.raises(KeyError):  # other errors pass through unchanged
            await worker.run(lambda conn: {"a": 1}["x"])
        assert (await worker.run(lambda conn: conn.isolation_level)) == "DEFERRED"
    finally:
        worker.close()
    with pytest.raises(StorageError, match="not open"):
        await worker.run(lambda conn: None)


async def test_an_unopenable_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite3").mkdir()
    worker = SqliteWorker(tmp_path / "dir.sqlite3", label="the test db", thread_name="test-worker")
    with pytest.raises(StorageError, match=r"^Cannot open the test db"):
        await worker.aopen()
    assert not worker.is_open
