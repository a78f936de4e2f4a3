"""A Store wrapper for the contract suite: every call's state change must be in the lifecycle table.

Around every Store method it reads each call's state straight from the database (its own connection,
not the store's code), and after the method asserts that each call that changed state made a move
``receiver.lifecycle.can_transition`` allows, and that each new call began in an ``INITIAL`` state.
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg

from receiver.lifecycle import INITIAL, CallState, can_transition
from receiver.store import Store

States = dict[str, CallState]


class StateReader:
    """Reads ``{session_id: state}`` of every call, from SQLite (a path) or PostgreSQL (a URL)."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def read(self) -> States:
        if self._url.startswith("sqlite:///"):
            conn = sqlite3.connect(self._url.removeprefix("sqlite:///"))
            try:
                rows = conn.execute("SELECT session_id, state FROM calls").fetchall()
            finally:
                conn.close()
        else:
            pg = await asyncpg.connect(self._url)
            try:
                rows = [tuple(r) for r in await pg.fetch("SELECT session_id, state FROM calls")]
            finally:
                await pg.close()
        return {session: CallState(state) for session, state in rows}


def check(method: str, before: States, after: States) -> None:
    for session, state in after.items():
        old = before.get(session)
        if old is None:
            assert state in INITIAL, f"{method} created {session} in {state}"
        elif old != state:
            assert can_transition(old, state), f"{method} moved {session} {old} -> {state}"


class Watched:
    """Proxies a Store; each coroutine method is checked with ``check``. ``moves`` counts the
    changes seen, so a test can tell the wrapper is not idle."""

    def __init__(self, store: Store, reader: StateReader) -> None:
        self._store = store
        self._reader = reader
        self.moves = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if name in {"open", "close", "migrate"} or not inspect.iscoroutinefunction(target):
            return target

        async def watched(*args: Any, **kwargs: Any) -> Any:
            before = await self._reader.read()
            result = await cast(Callable[..., Awaitable[Any]], target)(*args, **kwargs)
            after = await self._reader.read()
            check(name, before, after)
            self.moves += sum(1 for s, state in after.items() if before.get(s) != state)
            return result

        return watched


def watched(store: Store, url: str) -> Store:
    return cast(Store, Watched(store, StateReader(url)))
