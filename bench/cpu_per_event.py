"""CPU per ingested event, in process: the receiver's ASGI app and the minimal durable baseline.

wrk on this 2-core machine varies by a factor of two from hour to hour; the CPU one event costs
varies much less. This drives each app's ASGI callable directly (no sockets, no uvicorn: the same
for both) with signed ``session.ended`` events, 64 at a time, each app on a fresh database of the
same kind, and reports the process CPU (all threads, writer included) per event:

    .venv/bin/python bench/cpu_per_event.py                       # SQLite, 20,000 events each
    .venv/bin/python bench/cpu_per_event.py --database postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/cpu_per_event.py --profile /tmp/receiver.prof   # cProfile of the receiver

Kallglot answers every request 402 (no credits), so the starter pauses as in ``run.py``'s ingest.
What this leaves out (HTTP parsing, socket writes) is the same code in both apps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import durable_app

from receiver.app import create_app
from receiver.commands.send import build_event
from receiver.settings import load_settings
from receiver.signing import sign_kallglot

SECRET = "bench_webhook_secret_0123456789"
CONCURRENCY = 64


def requests(tag: str, count: int) -> list[tuple[list[tuple[bytes, bytes]], bytes]]:
    now = time.time()
    out = []
    for i in range(count):
        body = json.dumps(
            build_event("session.ended", f"sess_{tag}_{i:07d}", None, now), separators=(",", ":")
        ).encode()
        headers = [
            (b"host", b"receiver"),
            (b"content-type", b"application/json"),
            (b"kallglot-signature", sign_kallglot(SECRET, int(now), body).encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        out.append((headers, body))
    return out


async def post(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/kallglot",
        "raw_path": b"/webhooks/kallglot",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


class Lifespan:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lifespan:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.outbox.get()
        if answer["type"] != "lifespan.startup.complete":
            raise SystemExit(f"start-up failed: {answer}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        assert self.task is not None
        await self.task


async def measure(
    app: Any, reqs: list[tuple[list[tuple[bytes, bytes]], bytes]], profile: str | None
) -> float:
    async with Lifespan(app):
        for headers, body in reqs[:500]:  # warm-up: imports, caches, first statements
            assert await post(app, headers, body) == 200
        work = iter(reqs[500:])
        statuses: list[int] = []

        async def worker() -> None:
            for headers, body in work:
                statuses.append(await post(app, headers, body))

        profiler = cProfile.Profile() if profile else None
        started, started_main = time.process_time(), time.thread_time()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, main = time.process_time() - started, time.thread_time() - started_main
        if set(statuses) != {200}:
            raise SystemExit(f"non-200 answers: {sorted(set(statuses))}")
        print(
            f"  event loop thread {main / len(statuses) * 1e6:.1f} us/event, other threads {(cpu - main) / len(statuses) * 1e6:.1f}"
        )
        return cpu / len(statuses) * 1e6


def refuse_kallglot(request: httpx.Request) -> httpx.Response:
    return httpx.Response(402, json={"error": {"code": "insufficient_credits", "message": "no credits"}})


async def fresh_database(database: str, tmp: str, name: str) -> str:
    if database == "sqlite":
        return f"sqlite:///{tmp}/{name}.db"
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return database.rsplit("/", 1)[0] + f"/{name}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database", default="sqlite", help="sqlite, or a PostgreSQL URL to make databases on"
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the receiver's measured part here")
    args = parser.parse_args()
    os.environ.setdefault("RECEIVER_LOG_LEVEL", "WARNING")
    results: dict[str, list[float]] = {"minimal durable": [], "receiver": []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            tag = f"cpe{os.getpid()}_{run}"
            url = await fresh_database(args.database, tmp, f"{tag}_durable")
            durable = durable_app.build(url, SECRET)
            results["minimal durable"].append(await measure(durable, requests(f"{tag}d", args.events), None))
            url = await fresh_database(args.database, tmp, f"{tag}_receiver")
            settings = load_settings(
                database_url=url,
                kallglot_api_url="http://kallglot.invalid",
                kallglot_api_key="bench_key",
                kallglot_webhook_secrets=SECRET,
                handlers=[{"name": "file", "type": "file", "path": f"{tmp}/{tag}.jsonl"}],
            )
            receiver = create_app(settings, kallglot_transport=httpx.MockTransport(refuse_kallglot))
            profile = args.profile if run == args.repeat - 1 else None
            results["receiver"].append(await measure(receiver, requests(f"{tag}r", args.events), profile))
            print(
                f"run {run + 1}: minimal durable {results['minimal durable'][-1]:.1f} us/event,"
                f" receiver {results['receiver'][-1]:.1f} us/event",
                flush=True,
            )
    best = {name: min(values) for name, values in results.items()}
    print(
        f"CPU per event (best of {args.repeat}): minimal durable {best['minimal durable']:.1f} us,"
        f" receiver {best['receiver']:.1f} us, receiver/minimal {best['receiver'] / best['minimal durable']:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
