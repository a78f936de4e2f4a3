"""Crash properties for the credit: a real ``serve`` SIGKILLed at random points, on both stores.

A sender announces calls (each twice, as Kallglot redelivers) while the receiver is killed at
random moments and restarted, so that kills land during the start POST, between the POST's
acceptance and ``mark_started``, while an analysis is followed and finished, and while results are
delivered. Afterwards every call is delivered, the sandbox counted exactly one accepted analysis
POST (one credit) per call, and the receiver never answered a 5xx.

CI runs ``RECEIVER_CRASH_KILLS`` (default 11) kills per store; a soak sets it higher, e.g. 200.
``RECEIVER_CRASH_REPORT=path`` appends the figures of each run as a JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET, Sandbox
from tests.integration.harness import (
    ADMIN_TOKEN,
    Sink,
    build_kallglot_body,
    sandbox_config,
    sign_kallglot_headers,
    start_server,
    stop_server,
    wait_for,
)
from tests.integration.test_process import Receiver

KILLS = int(os.environ.get("RECEIVER_CRASH_KILLS", "11"))
CALLS_PER_ROUND = 3


@dataclass
class Run:
    receiver: Receiver
    sandbox: Sandbox
    sink: Sink
    database: str
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    sessions: list[str] = field(default_factory=list)
    stages: Counter[str] = field(default_factory=Counter)


@pytest.fixture
async def run(tmp_path: Path, database: str) -> AsyncIterator[Run]:
    sink = Sink(delay=0.05)
    sink_server, sink_url = await start_server(sink.app())
    box = Sandbox(sandbox_config(analysis_latency_seconds=0.3, response_delay_seconds=0.15))
    box_server, box_url = await start_server(box.app)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_", "SENTRY_"))},
        "KALLGLOT_API_URL": f"{box_url}/v1",
        "KALLGLOT_API_KEY": DEV_API_KEY,
        "KALLGLOT_WEBHOOK_SECRETS": DEV_WEBHOOK_SECRET,
        "RECEIVER_DATABASE_URL": database,
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_POLL_AFTER_SECONDS": "1",
        "RECEIVER_LOG_LEVEL": "WARNING",
        "RECEIVER_HANDLERS": json.dumps(
            [
                {
                    "name": "sink",
                    "type": "webhook",
                    "url": f"{sink_url}/hook",
                    "retry": {"initial_seconds": 0.1, "max_seconds": 0.5},
                }
            ]
        ),
    }
    receiver = Receiver(env, tmp_path / "receiver.log")
    box.update_config({"webhook_url": f"{receiver.url}/webhooks/kallglot"})
    try:
        yield Run(receiver, box, sink, database)
    finally:
        if receiver.process is not None and receiver.process.poll() is None:
            receiver.process.kill()
            receiver.process.wait()
        await stop_server(box_server)
        await stop_server(sink_server)


async def _announce(run: Run, http: httpx.AsyncClient, session_id: str) -> None:
    """Like Kallglot: retry until a 2xx (the receiver may be dead or restarting)."""
    body = build_kallglot_body("session.ended", session_id)
    deadline = time.monotonic() + 120
    while True:
        try:
            response = await http.post(
                f"{run.receiver.url}/webhooks/kallglot", content=body, headers=sign_kallglot_headers(body)
            )
        except httpx.TransportError:
            run.transport_errors += 1
        else:
            run.statuses[response.status_code] += 1
            if response.status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{session_id} not accepted within 120 s")
        await asyncio.sleep(0.1)


async def _work_in_hand(run: Run) -> set[str]:
    """Where the killed process was: read the store after the kill (nobody is writing)."""
    charged = set(run.sandbox.stats()["charged_by_session"])
    query_calls = "SELECT session_id, state FROM calls"
    query_deliveries = "SELECT count(*) FROM deliveries WHERE state = 'pending'"
    if run.database.startswith("sqlite:///"):
        with sqlite3.connect(run.database.removeprefix("sqlite:///")) as db:
            calls = db.execute(query_calls).fetchall()
            pending = db.execute(query_deliveries).fetchone()[0]
    else:
        conn = await asyncpg.connect(run.database, timeout=5)
        try:
            calls = [tuple(row) for row in await conn.fetch(query_calls)]
            pending = await conn.fetchval(query_deliveries)
        finally:
            await conn.close()
    stages = set()
    for session_id, state in calls:
        if state in ("received", "starting"):
            stages.add("after the POST, before mark_started" if session_id in charged else "start POST")
        elif state in ("processing", "stale"):
            stages.add("following and finishing")
    if pending:
        stages.add("delivery")
    return stages


#: Where each kill aims (in turn); the kill follows the observed moment after a random jitter.
KILL_POINTS = ("start POST", "after the POST", "finishing", "delivery", "anywhere")


def _counter(run: Run, point: str) -> int:
    stats = run.sandbox.stats()
    return {
        "start POST": stats["analysis_posts"],  # arrived: the answer is 0.15 s away
        "after the POST": stats["credits_charged"],  # accepted: mark_started is next
        "finishing": stats["webhooks_sent"],  # a result is on its way to the receiver
        "delivery": run.sink.attempts,  # a delivery is in flight (the sink takes 0.05 s)
        "anywhere": 0,
    }[point]


async def _reached(run: Run, point: str, rng: random.Random) -> None:
    """Wait until the receiver is at ``point`` (or 10 s), then a random jitter."""
    before = _counter(run, point)
    if point == "anywhere":
        await asyncio.sleep(rng.uniform(0.05, 1.5))  # deliberate: a kill at a random moment
        return
    deadline = time.monotonic() + 10
    while _counter(run, point) <= before and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(
        rng.uniform(0.0, 0.08)
    )  # deliberate jitter: kill just after the point, anywhere in it


@pytest.mark.timeout(900)
async def test_random_sigkills_never_cost_a_second_credit_nor_lose_a_call(run: Run) -> None:
    rng = random.Random(os.environ.get("RECEIVER_CRASH_SEED", "8"))
    senders: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(timeout=10) as http:
        await run.receiver.start()
        for round_ in range(KILLS):
            for i in range(CALLS_PER_ROUND):
                session_id = f"sess_crash_{round_}_{i}"
                run.sessions.append(session_id)
                senders.append(asyncio.create_task(_announce(run, http, session_id)))
                # Kallglot redelivers: the same call announced again under another event id
                senders.append(asyncio.create_task(_announce(run, http, session_id)))
            target = KILL_POINTS[round_ % len(KILL_POINTS)]
            await _reached(run, target, rng)
            run.receiver.signal(signal.SIGKILL)
            await asyncio.to_thread(run.receiver.wait, 10)
            run.stages.update(await _work_in_hand(run))
            await run.receiver.start()
        await asyncio.gather(*senders)
        await wait_for(
            lambda: set(run.sink.ids()) >= set(run.sessions),
            timeout=240,
            what="every call to be delivered",
        )

    charged = run.sandbox.stats()["charged_by_session"]
    duplicates = {s: charged.get(s) for s in run.sessions if charged.get(s) != 1}
    server_errors = sum(n for status, n in run.statuses.items() if status >= 500)
    figures = {
        "store": run.database.split(":", 1)[0],
        "kills": KILLS,
        "calls": len(run.sessions),
        "lost": len(set(run.sessions) - set(run.sink.ids())),
        "duplicate_credits": sum((charged.get(s) or 0) - 1 for s in run.sessions if charged.get(s)),
        "5xx": server_errors,
        "kills_with_work_in_hand": dict(run.stages),
    }
    print(json.dumps(figures))
    if report := os.environ.get("RECEIVER_CRASH_REPORT"):
        with Path(report).open("a") as out:
            out.write(json.dumps(figures) + "\n")
    assert duplicates == {}, duplicates
    assert server_errors == 0, run.statuses
    assert set(run.sink.ids()) >= set(run.sessions)
    # the kills really landed on work in hand, not on an idle process
    assert sum(run.stages.values()) >= KILLS // 2, run.stages
