"""Group commit for PostgreSQL's inbound events: concurrent ``accept_call``s share one statement.

While one batch is on its way to the server, the requests arriving meanwhile queue; the next
batch takes them all (at most ``max_rows``) as one multi-row ``INSERT … SELECT FROM unnest(…)``:
one round trip and one COMMIT for the lot, as the SQLite group commit does with one fsync. Each
request still gets its own outcome (accepted, merged or duplicate) from its own row, and is
answered only after the statement committed, so an HTTP 2xx always follows a durable write.

Two requests for the same event or the same call never share a batch (``ON CONFLICT DO UPDATE``
may not touch one row twice in a statement): the later one waits for the next batch. When a
batch fails, each of its requests runs again on its own, so the failure stays with its caller.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from receiver.store import EventOutcome, NewCall, StoreUnavailable
from receiver.store.rows import include_json

#: Runs ACCEPT_CALLS with the given column arrays; returns the rows in input order.
Execute = Callable[[list[list[Any]]], Awaitable[list[Any]]]
#: Runs one request alone (the single-row path), for failure isolation.
Single = Callable[["Pending"], Awaitable[EventOutcome]]


@dataclass
class Pending:
    source: str
    event_id: str
    event_type: str
    call: NewCall
    now: float
    future: asyncio.Future[EventOutcome]


class AcceptBatcher:
    """Queues ``accept_call``s and flushes them in batches, ``flushers`` batches in flight at most."""

    def __init__(self, execute: Execute, single: Single, *, max_rows: int = 256, flushers: int = 2) -> None:
        self._execute = execute
        self._single = single
        self._max_rows = max_rows
        self._flushers = flushers
        self._queue: list[Pending] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def accept(
        self, source: str, event_id: str, event_type: str, call: NewCall, now: float
    ) -> EventOutcome:
        future: asyncio.Future[EventOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append(Pending(source, event_id, event_type, call, now, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        while self._queue and self._running < self._flushers:
            batch = self._take()
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        events: set[tuple[str, str]] = set()
        sessions: set[str] = set()
        later: list[Pending] = []
        for item in self._queue:
            key = (item.source, item.event_id)
            if item.future.done():
                continue  # its caller went away before it was sent
            if len(batch) >= self._max_rows or key in events or item.call.session_id in sessions:
                later.append(item)
                continue
            events.add(key)
            sessions.add(item.call.session_id)
            batch.append(item)
        self._queue = later
        return batch

    async def _flush(self, batch: list[Pending]) -> None:
        try:
            await self._run(batch)
        finally:
            self._running -= 1
            self._kick()

    async def _run(self, batch: list[Pending]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        calls = [item.call for item in batch]
        columns: list[list[Any]] = [
            [item.source for item in batch],
            [item.event_id for item in batch],
            [item.event_type for item in batch],
            [call.session_id for call in calls],
            [json.dumps(call.fields) for call in calls],
            [call.end_session for call in calls],
            [call.analysis_key for call in calls],
            [item.now for item in batch],
            [call.profile for call in calls],
            [include_json(call.include) for call in calls],
        ]
        try:
            rows = await self._execute(columns)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except Exception:
            # One bad row fails the statement: run each on its own so the failure stays with it.
            await asyncio.gather(*(self._alone(item) for item in batch))
            return
        for item, row in zip(batch, rows, strict=True):
            if item.future.done():
                continue
            if not row["fresh"] or row["inserted"] is None:  # a repeat, or a session analysed before
                item.future.set_result(EventOutcome.DUPLICATE)
            else:
                item.future.set_result(EventOutcome.ACCEPTED if row["inserted"] else EventOutcome.MERGED)

    async def _alone(self, item: Pending) -> None:
        try:
            outcome = await self._single(item)
        except asyncio.CancelledError:
            if not item.future.done():
                item.future.cancel()
            raise
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(outcome)
