"""Group commit: a batch commits together, and one failing operation does not take others down."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from receiver.store import StoreError
from receiver.store.groupcommit import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(str(tmp_path / "g.db"))
    await asyncio.to_thread(database.start_and_wait)
    yield database
    await asyncio.to_thread(database.stop)


def submit(db: Database, op: Callable[[sqlite3.Connection], Any]) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    db.submit(op, future)
    return future


def insert(value: int) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        return value

    return op


def half_then_fail(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES (99)")
    conn.execute("INSERT INTO missing_table VALUES (1)")


async def test_a_failing_operation_rolls_back_alone_and_the_others_commit(db: Database) -> None:
    await submit(db, lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))

    results = await asyncio.gather(
        submit(db, insert(1)), submit(db, half_then_fail), submit(db, insert(2)), return_exceptions=True
    )

    assert results[0] == 1
    assert isinstance(results[1], StoreError)
    assert results[2] == 2
    rows = await submit(db, lambda conn: sorted(r[0] for r in conn.execute("SELECT v FROM t")))
    assert rows == [1, 2]


async def test_many_concurrent_operations_are_all_answered(db: Database) -> None:
    await submit(db, lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))

    results = await asyncio.gather(*(submit(db, insert(i)) for i in range(2000)))

    assert results == list(range(2000))
    assert await submit(db, lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 2000
