"""The minimal durable baseline of the ingest benchmark: verify, parse, insert by group commit, 200.

What any correct webhook receiver must do and nothing more: check the ``Kallglot-Signature``
HMAC (with the receiver's own ``verify_kallglot``), ``json.loads`` the body, insert the event id
and body, and answer only after COMMIT. On the receiver's store and durability settings:

- SQLite: WAL, ``synchronous=FULL``, one writer thread committing whatever waits in one
  transaction (the receiver's ``receiver.store.groupcommit.Database``);
- PostgreSQL: an asyncpg pool; the events waiting while a batch is on its way go in the next one
  as one ``INSERT … SELECT FROM unnest(…)`` (one round trip, one COMMIT), two batches in flight.

    .venv/bin/python bench/durable_app.py --port 8082 --database sqlite:///tmp/x.db --secret S
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.signing import SignatureError, verify_kallglot
from receiver.store.groupcommit import Database

DDL = "CREATE TABLE IF NOT EXISTS bench_events (event_id text PRIMARY KEY, body text NOT NULL)"
OK = b'{"status":"accepted"}'


class SQLiteSink:
    def __init__(self, path: str) -> None:
        self.db = Database(path)

    async def open(self) -> None:
        self.db.start_and_wait()
        await self.insert(None, "")

    async def insert(self, event_id: str | None, body: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if event_id is None:
                conn.execute(DDL)
            else:
                conn.execute("INSERT OR IGNORE INTO bench_events VALUES (?, ?)", (event_id, body))

        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.db.submit(op, future)
        await future

    async def close(self) -> None:
        self.db.stop()


class PostgresSink:
    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: Any = None
        self.queue: list[tuple[str, str, asyncio.Future[None]]] = []
        self.running = 0

    async def open(self) -> None:
        # No reset query on release, as the receiver's pool (one round trip per batch, not two).
        self.pool = await asyncpg.create_pool(self.url, min_size=2, max_size=10, reset=_keep_session)
        await self.pool.execute(DDL)

    async def insert(self, event_id: str, body: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append((event_id, body, future))
        self.kick()
        await future

    def kick(self) -> None:
        while self.queue and self.running < 2:
            batch, self.queue = self.queue[:256], self.queue[256:]
            self.running += 1
            asyncio.get_running_loop().create_task(self.flush(batch))

    async def flush(self, batch: list[tuple[str, str, asyncio.Future[None]]]) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO bench_events SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                [b[0] for b in batch],
                [b[1] for b in batch],
            )
            for _, _, future in batch:
                future.set_result(None)
        except Exception as exc:
            for _, _, future in batch:
                future.set_exception(exc)
        finally:
            self.running -= 1
            self.kick()

    async def close(self) -> None:
        await self.pool.close()


async def _keep_session(conn: Any) -> None:
    pass


def build(database: str, secret: str) -> Starlette:
    sink: Any = (
        SQLiteSink(database.removeprefix("sqlite:///"))
        if database.startswith("sqlite:")
        else PostgresSink(database)
    )

    async def webhook(request: Request) -> Response:
        body = await request.body()
        try:
            verify_kallglot(
                request.headers.get("kallglot-signature"),
                body,
                [secret],
                tolerance_seconds=300,
                now=time.time(),
            )
            event = json.loads(body)
            event_id = event["id"]
        except (SignatureError, ValueError, KeyError, TypeError):
            return Response(b'{"error":{"code":"bad","message":"bad"}}', 400, media_type="application/json")
        await sink.insert(str(event_id), body.decode())
        return Response(OK, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sink.open()
        yield
        await sink.close()

    return Starlette(
        routes=[
            Route("/webhooks/kallglot", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--database", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    # The same uvicorn options as bench/bare_app.py and ``kallglot-receiver serve``.
    config = uvicorn.Config(
        build(args.database, args.secret),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
