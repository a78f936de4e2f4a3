"""A Store wrapper for the contract suite: every call's state change must be in the lifecycle table.

Around every Store method it reads each call's state straight from the database (its own connection,
not the store's code), and after the method asserts that each call that changed state made a move
``receiver.lifecycle.can_transition`` allows (each delivery: ``can_transition_delivery``), and that
each new call began in an ``INITIAL`` state (each new delivery: ``pending``).
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg

from receiver.lifecycle import INITIAL, CallState, DeliveryState, can_transition, can_transition_delivery
from receiver.store import Store

States = dict[str, CallState]
Deliveries = dict[str, DeliveryState]
Snapshot = tuple[States, Deliveries]


class StateReader:
    """Reads the state of every call and delivery, from SQLite (a path) or PostgreSQL (a URL)."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def read(self) -> Snapshot:
        calls_sql, deliveries_sql = "SELECT session_id, state FROM calls", "SELECT id, state FROM deliveries"
        if self._url.startswith("sqlite:///"):
            conn = sqlite3.connect(self._url.removeprefix("sqlite:///"))
            try:
                calls = conn.execute(calls_sql).fetchall()
                deliveries = conn.execute(deliveries_sql).fetchall()
            finally:
                conn.close()
        else:
            pg = await asyncpg.connect(self._url)
            try:
                calls = [tuple(r) for r in await pg.fetch(calls_sql)]
                deliveries = [tuple(r) for r in await pg.fetch(deliveries_sql)]
            finally:
                await pg.close()
        return (
            {session: CallState(state) for session, state in calls},
            {ident: DeliveryState(state) for ident, state in deliveries},
        )


def check(method: str, before: Snapshot, after: Snapshot) -> int:
    """Asserts every change from ``before`` to ``after``; returns how many there were."""
    moves = 0
    for session, state in after[0].items():
        old = before[0].get(session)
        if old is None:
            assert state in INITIAL, f"{method} created call {session} in {state}"
        elif old != state:
            assert can_transition(old, state), f"{method} moved call {session} {old} -> {state}"
            moves += 1
    for ident, dstate in after[1].items():
        dold = before[1].get(ident)
        if dold is None:
            assert dstate is DeliveryState.PENDING, f"{method} created delivery {ident} in {dstate}"
        elif dold != dstate:
            assert can_transition_delivery(dold, dstate), (
                f"{method} moved delivery {ident} {dold} -> {dstate}"
            )
            moves += 1
    return moves


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
            self.moves += check(name, before, after)
            return result

        return watched


def watched(store: Store, url: str) -> Store:
    return cast(Store, Watched(store, StateReader(url)))
