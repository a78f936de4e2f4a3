"""Group commit for SQLite: one thread owns the connection and commits waiting operations together.

The thread takes every operation that is waiting, runs them in one transaction and commits once,
then answers them all: under load one fsync makes a whole batch durable. When an operation fails,
the batch rolls back and each of its operations runs again in a transaction of its own, so the
failure stays with its caller. A future is answered only after COMMIT returned, so an HTTP 2xx
always follows a durable write.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from receiver.store import StoreError, StoreUnavailable

Op = Callable[[sqlite3.Connection], Any]
_BATCH_MAX = 512


class Database(threading.Thread):
    """The one thread that owns the connection and commits operations in groups."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        super().__init__(name="sqlite-store", daemon=True)
        self._path = path
        self._read_only = read_only
        self._queue: queue.SimpleQueue[tuple[Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._opened = threading.Event()
        self._open_error: BaseException | None = None

    def start_and_wait(self) -> None:
        self.start()
        self._opened.wait()
        if self._open_error is not None:
            raise StoreUnavailable(f"cannot open the SQLite database: {self._open_error}") from None

    def submit(self, op: Op, future: asyncio.Future[Any]) -> None:
        self._queue.put((op, future))

    def stop(self) -> None:
        self._queue.put(None)
        self.join(timeout=10)

    def run(self) -> None:
        try:
            if self._read_only:
                conn = _connect_read_only(self._path)
            else:
                if self._path != ":memory:":
                    Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
                conn.execute("PRAGMA journal_mode=WAL")
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
        except (sqlite3.Error, OSError) as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop(conn)
        finally:
            conn.close()

    def _loop(self, conn: sqlite3.Connection) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < _BATCH_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._run_batch(conn, batch)
            if stop:
                return

    def _run_batch(self, conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        outcomes = self._transaction(conn, batch)
        if outcomes is None:
            # Something in the batch failed and the whole transaction was rolled back: run each
            # operation in a transaction of its own so the failure stays with its caller.
            outcomes = []
            for item in batch:
                outcomes += self._transaction(conn, [item]) or []
        self._answer(outcomes)

    def _transaction(
        self, conn: sqlite3.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]] | None:
        """Run ``batch`` in one transaction; None when an operation failed in a batch of several."""
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        read_only = self._read_only
        try:
            # A read-only connection must not ask for the write lock (BEGIN IMMEDIATE would).
            conn.execute("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")
            for op, future in batch:
                try:
                    outcomes.append((future, op(conn), None))
                except Exception as exc:
                    conn.execute("ROLLBACK")
                    return None if len(batch) > 1 else [(future, None, _translate(exc))]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = StoreUnavailable(f"SQLite commit failed: {exc}")
            return [(future, None, error) for _, future in batch]
        return outcomes

    @staticmethod
    def _answer(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]
        ] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, items)


def _connect_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write (``mode=ro``, ``query_only``) and never creates the file:
    what operator commands beside a live ``serve`` use, so that they change nothing."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no database file at {path}")
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _translate(exc: Exception) -> BaseException:
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"SQLite: {exc}")
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite: {exc}")
    return exc


def _resolve(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
