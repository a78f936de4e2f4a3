"""Operator queries on a big store: fill N calls (default 1,000,000) by bulk insert, then measure
``list_calls`` (what ``GET /admin/calls`` and the console run) per filter: p50 / p99 in ms.

    .venv/bin/python bench/console.py [--calls N] [--runs 50] [--database sqlite|postgresql://…|pg]

``pg`` starts a private PostgreSQL cluster (as the tests do); ``postgresql://…`` names a server
where a fresh database may be created. The target (issue 12): p99 < 200 ms at 1,000,000 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver.lifecycle import CallState, DeliveryState
from receiver.store import Store, open_store
from receiver.store.keys import delivery_id
from receiver.store.query import CallQuery

BASE = 1_770_000_000.0
STATES = [
    ("delivered", 90),
    ("completed", 3),
    ("failed", 2),
    ("skipped", 2),
    ("processing", 1),
    ("received", 1),
    ("stale", 1),
]
PHONES = [f"+1415555{n:04d}" for n in range(10_000)]
REASONS = ["Kallglot answered 404: session not found", "call shorter than 10 s", "analysis timed out"]


def rows(count: int, seed: int = 7) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """(call row, delivery row or None), oldest first, one call every 0.5 s."""
    rng = random.Random(seed)
    population = [s for s, w in STATES for _ in range(w)]
    for i in range(count):
        state = rng.choice(population)
        session = f"sess_{i:09d}"
        received = BASE + i * 0.5
        finished = received + 40 if state in ("delivered", "completed", "failed", "skipped") else None
        started = received + 1 if state != "received" else None
        reason = rng.choice(REASONS) if state in ("failed", "skipped") else None
        call = json.dumps({"from": rng.choice(PHONES), "to": rng.choice(PHONES[:50]), "direction": "inbound"})
        analysis = json.dumps({"id": f"anl_{i}", "status": "failed" if state == "failed" else "completed"})
        call_row = (
            session,
            state,
            call,
            "key",
            f"anl_{i}",
            analysis,
            reason,
            received,
            started,
            finished,
            finished if state == "delivered" else None,
            received,
            received,
        )
        delivery = None
        if state in ("delivered", "completed", "failed"):
            dstate = "delivered" if state == "delivered" else ("dead" if rng.random() < 0.5 else "pending")
            delivery = (
                delivery_id(session, "crm"),
                session,
                "crm",
                "completed",
                dstate,
                1,
                None,
                finished,
                finished,
                finished,
                finished if dstate == "delivered" else None,
                finished if dstate == "dead" else None,
            )
        yield call_row, delivery


CALL_SQL = (
    "INSERT INTO calls (session_id, state, call_json, analysis_key, analysis_id, analysis_json, reason,"
    " received_at, started_at, finished_at, delivered_at, next_at, updated_at) VALUES ({})"
)
DELIVERY_SQL = (
    "INSERT INTO deliveries (id, session_id, handler, status, state, attempts, last_error, created_at,"
    " first_attempt_at, next_at, delivered_at, dead_at) VALUES ({})"
)


def fill_sqlite(path: str, count: int) -> None:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    calls, deliveries = [], []
    for call, delivery in rows(count):
        calls.append(call)
        if delivery:
            deliveries.append(delivery)
        if len(calls) >= 50_000:
            conn.executemany(CALL_SQL.format(",".join("?" * 13)), calls)
            conn.executemany(DELIVERY_SQL.format(",".join("?" * 12)), deliveries)
            calls, deliveries = [], []
    conn.executemany(CALL_SQL.format(",".join("?" * 13)), calls)
    conn.executemany(DELIVERY_SQL.format(",".join("?" * 12)), deliveries)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


async def fill_postgres(url: str, count: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    columns_c = [
        "session_id",
        "state",
        "call_json",
        "analysis_key",
        "analysis_id",
        "analysis_json",
        "reason",
        "received_at",
        "started_at",
        "finished_at",
        "delivered_at",
        "next_at",
        "updated_at",
    ]
    columns_d = [
        "id",
        "session_id",
        "handler",
        "status",
        "state",
        "attempts",
        "last_error",
        "created_at",
        "first_attempt_at",
        "next_at",
        "delivered_at",
        "dead_at",
    ]
    await conn.set_type_codec(  # COPY speaks binary: jsonb is a version byte, then the text
        "jsonb",
        encoder=lambda v: b"\x01" + v.encode(),
        decoder=lambda b: b[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )
    calls, deliveries = [], []

    async def flush() -> None:
        await conn.copy_records_to_table("calls", records=calls, columns=columns_c)
        await conn.copy_records_to_table("deliveries", records=deliveries, columns=columns_d)
        calls.clear()
        deliveries.clear()

    for call, delivery in rows(count):
        calls.append(call)
        if delivery:
            deliveries.append(delivery)
        if len(calls) >= 50_000:
            await flush()
    await flush()
    await conn.execute("ANALYZE")
    await conn.close()


def queries(count: int, rng: random.Random) -> dict[str, Any]:
    """Filter name -> a function giving a fresh CallQuery each run."""

    def at(fraction: float) -> float:
        return BASE + fraction * count * 0.5

    return {
        "newest page": lambda: CallQuery(limit=50),
        "deep page (cursor)": lambda: CallQuery(limit=50, cursor=(at(rng.random()), "sess_999999999")),
        "state=failed": lambda: CallQuery(states=(CallState.FAILED,), limit=50),
        "state=delivered + time window": lambda: (
            lambda t: CallQuery(states=(CallState.DELIVERED,), since=t, until=t + 3600, limit=50)
        )(at(rng.random())),
        "finished window": lambda: (
            lambda t: CallQuery(time_field="finished", since=t, until=t + 600, limit=50)
        )(at(rng.random())),
        "phone": lambda: CallQuery(phone=rng.choice(PHONES), limit=50),
        "session_id": lambda: CallQuery(session_id=f"sess_{rng.randrange(count):09d}"),
        "handler + dead": lambda: CallQuery(handler="crm", delivery_state=DeliveryState.DEAD, limit=50),
        "reason text": lambda: CallQuery(reason="timed out", limit=50),
    }


async def measure(store: Store, count: int, runs: int) -> dict[str, tuple[float, float]]:
    rng = random.Random(11)
    out = {}
    for name, make in queries(count, rng).items():
        await store.list_calls(make())  # warm-up: the first run pays for a cold cache
        times = []
        for _ in range(runs):
            query = make()
            start = time.perf_counter()
            await store.list_calls(query)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        out[name] = (statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))])
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--database", default="sqlite", help="sqlite, pg, or postgresql://…")
    args = parser.parse_args()
    cluster = None
    if args.database == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='kr-console-')}/receiver.db"
    else:
        import asyncpg

        if args.database == "pg":
            from tests.pg import start_cluster

            cluster, _ = start_cluster()
            server = cluster.url
        else:
            server = args.database
        name = f"console_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(server)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        store = open_store(url)
        await store.open()
        await store.migrate()
        await store.close()
        start = time.perf_counter()
        if url.startswith("sqlite"):
            await asyncio.to_thread(fill_sqlite, url.removeprefix("sqlite:///"), args.calls)
        else:
            await fill_postgres(url, args.calls)
        print(f"{url.split(':')[0]}: filled {args.calls:,} calls in {time.perf_counter() - start:.0f} s")
        store = open_store(url, read_only=True)
        await store.open()
        results = await measure(store, args.calls, args.runs)
        await store.close()
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{'filter':<32} {'p50 ms':>8} {'p99 ms':>8}")
    for name, (p50, p99) in results.items():
        flag = "" if p99 < 200 else "  (over 200 ms)"
        print(f"{name:<32} {p50:8.1f} {p99:8.1f}{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
