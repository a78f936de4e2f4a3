"""Several ``kallglot-receiver serve`` processes on one PostgreSQL, against the sandbox as a process.

What operators rely on when they run more than one replica: duplicates spread over the replicas,
a replica SIGKILLed midway, and PostgreSQL stopped under load never cost a second credit, never
lose a call, never deliver twice to a handler, and never answer a 5xx other than 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from receiver.commands.send import build_event
from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET
from receiver.signing import sign_kallglot
from tests.pg import (  # noqa: F401
    Cluster,
    _drop,
    free_port,
    pg_empty_database,
    postgres_cluster,
    postgres_url,
    run_sync,
    with_database,
)

EXE = [sys.executable, "-m", "receiver"]


@dataclass
class Process:
    name: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Fleet:
    """The sandbox and the receivers of one test; everything is stopped (by pid) at the end."""

    root: Path
    database_url: str
    sandbox: Process | None = None
    replicas: list[Process] = field(default_factory=list)

    def _spawn(self, name: str, port: int, args: list[str], env: dict[str, str]) -> Process:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen([*EXE, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        return Process(name, port, popen, log)

    def start_sandbox(self, webhook_port: int) -> Process:
        port = free_port()
        args = [
            "sandbox",
            "--port",
            str(port),
            "--webhook-url",
            f"http://127.0.0.1:{webhook_port}/webhooks/kallglot",
        ]
        args += ["--analysis-latency", "0.2", "--credits", "1000000", "--rate-limit", "1000000"]
        args += ["--webhook-retry-scale", "0.02", "--webhook-timeout", "5", "--seed", "7"]
        self.sandbox = self._spawn("sandbox", port, args, _clean_env())
        return self.sandbox

    def start_replica(self, port: int) -> Process:
        assert self.sandbox is not None
        name = f"replica{len(self.replicas)}"
        env = _clean_env() | {
            "KALLGLOT_API_URL": f"{self.sandbox.url}/v1",
            "KALLGLOT_API_KEY": DEV_API_KEY,
            "KALLGLOT_WEBHOOK_SECRETS": DEV_WEBHOOK_SECRET,
            "RECEIVER_DATABASE_URL": self.database_url,
            "RECEIVER_POLL_AFTER_SECONDS": "3",
            "RECEIVER_LOG_LEVEL": "WARNING",
            "RECEIVER_SHUTDOWN_GRACE_SECONDS": "2",
            # one handler "file", each replica writing its own directory: a delivery written by two
            # replicas would show up twice
            "RECEIVER_HANDLERS": json.dumps(
                [{"name": "file", "type": "file", "path": f"{self.root}/{name}/"}]
            ),
        }
        replica = self._spawn(
            name, port, ["serve", "--host", "127.0.0.1", "--port", str(port), "--admin-port", "0"], env
        )
        self.replicas.append(replica)
        return replica

    def stop(self) -> None:
        processes = [*self.replicas, *([self.sandbox] if self.sandbox else [])]
        for process in processes:
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=5)

    def logs(self) -> str:
        out = []
        for process in [*self.replicas, *([self.sandbox] if self.sandbox else [])]:
            text = process.log.read_text(errors="replace") if process.log.exists() else ""
            out.append(f"--- {process.name} (exit {process.popen.poll()}) ---\n{text[-3000:]}")
        return "\n".join(out)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "KALLGLOT_", "SENTRY_"))}
    return env | {"PYTHONUNBUFFERED": "1"}


async def _wait_until(condition: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _ready(http: httpx.AsyncClient, process: Process) -> bool:
    if not process.alive():
        raise AssertionError(f"{process.name} exited with {process.popen.poll()}")
    try:
        return (await http.get(f"{process.url}/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _sandbox_stats(http: httpx.AsyncClient, fleet: Fleet) -> dict[str, Any]:
    assert fleet.sandbox is not None
    stats: dict[str, Any] = (await http.get(f"{fleet.sandbox.url}/_sandbox/stats")).json()
    return stats


FleetFactory = Callable[[str], Fleet]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetFactory]:
    """``fleet(database_url)``: a Fleet whose processes are stopped when the test ends."""
    made: list[Fleet] = []

    def make(database_url: str) -> Fleet:
        made.append(Fleet(tmp_path, database_url))
        return made[-1]

    yield make
    for each in made:
        each.stop()


class Sender:
    """Sends signed events like Kallglot does: on a 503 or a dead replica, retry (on another one)."""

    def __init__(self, http: httpx.AsyncClient, replicas: list[Process]) -> None:
        self.http = http
        self.replicas = replicas
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()
        self.done = 0

    async def send(self, body: bytes, first: int, deadline: float = 120.0) -> None:
        give_up = time.monotonic() + deadline
        attempt = 0
        while True:
            target = self.replicas[(first + attempt) % len(self.replicas)]
            attempt += 1
            headers = {
                "Kallglot-Signature": sign_kallglot(DEV_WEBHOOK_SECRET, int(time.time()), body),
                "Content-Type": "application/json",
            }
            try:
                response = await self.http.post(
                    f"{target.url}/webhooks/kallglot", content=body, headers=headers
                )
            except httpx.TransportError as exc:
                self.failures[type(exc).__name__] += 1
            else:
                self.statuses[response.status_code] += 1
                if response.status_code == 200:
                    return
            if time.monotonic() > give_up:
                raise AssertionError(f"event not accepted within {deadline:g}s")
            await asyncio.sleep(0.05 if attempt < len(self.replicas) else 0.5)


def _session_ended(session_id: str) -> bytes:
    return json.dumps(build_event("session.ended", session_id, None, time.time())).encode()


async def _calls_by_state(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM calls GROUP BY state")
        return {row["state"]: row["n"] for row in rows}
    finally:
        await conn.close()


async def _leases_of(database_url: str, pid: int) -> int:
    """How many calls and deliveries the replica with this pid holds leases on (OWNER = host:pid:…)."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        pattern = f"%:{pid}:%"
        return int(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM calls WHERE lease_owner LIKE $1)"
                " + (SELECT count(*) FROM deliveries WHERE lease_owner LIKE $1)",
                pattern,
            )
        )
    finally:
        await conn.close()


async def _replicas_counted(database_url: str) -> int:
    """The serve processes that said they are alive (they split the Kallglot rate limit by it)."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM replicas"))
    finally:
        await conn.close()


async def _stuck_leases(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        calls = await conn.fetchval("SELECT count(*) FROM calls WHERE lease_owner IS NOT NULL")
        deliveries = await conn.fetchval("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")
        return int(calls), int(deliveries)
    finally:
        await conn.close()


def _delivered_files(fleet: Fleet) -> dict[str, list[str]]:
    """delivery id -> the replicas whose directory holds it."""
    where: dict[str, list[str]] = {}
    for replica in fleet.replicas:
        folder = fleet.root / replica.name
        for path in folder.glob("*.json") if folder.exists() else []:
            where.setdefault(path.stem, []).append(replica.name)
    return where


@pytest.mark.timeout(600)
async def test_three_replicas_one_killed_midway_start_each_call_once_and_deliver_it_once(
    fleet: FleetFactory,
    pg_empty_database: str,  # noqa: F811
) -> None:
    calls = 1000
    ports = [free_port() for _ in range(3)]
    f = fleet(pg_empty_database)
    f.start_sandbox(webhook_port=ports[0])  # replica0 survives: it receives the sandbox's webhooks
    replicas = [f.start_replica(port) for port in ports]  # they migrate together, under the lock
    rng = random.Random(42)
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as http:
        try:
            for replica in replicas:
                await _wait_until(lambda r=replica: _ready(http, r), 60, f"{replica.name} ready")
            assert await _wait_until(
                lambda: _eq(_replicas_counted(pg_empty_database), 3), 15, "three replicas counted"
            )
            sender = Sender(http, replicas)
            sessions = [f"sess_{uuid.uuid4().hex[:12]}" for _ in range(calls)]
            gate = asyncio.Semaphore(24)

            async def one(session_id: str) -> None:
                body = _session_ended(session_id)
                other = _session_ended(session_id)  # the same end, announced under another event id
                async with gate:
                    first = rng.randrange(3)
                    await sender.send(body, first)
                    await sender.send(body, first + 1)  # Kallglot's retry of the same event
                    if rng.random() < 0.3:
                        await sender.send(other, first + 2)
                    sender.done += 1

            load = asyncio.gather(*(one(s) for s in sessions))
            victim = replicas[2]

            async def victim_holds_leases() -> int:
                return (
                    await _leases_of(pg_empty_database, victim.popen.pid) if sender.done >= calls // 2 else 0
                )

            # SIGKILL replica2 midway, while it holds leases: its work must be taken over by the others
            stranded = await _wait_until(victim_holds_leases, 120, "replica2 holding leases", interval=0.02)
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait(timeout=10)
            await load

            async def all_delivered() -> bool:
                states = await _calls_by_state(pg_empty_database)
                return states.get("delivered", 0) == calls

            # leases of the killed replica expire (start 120 s, poll 60 s, delivery 90 s), then others resume
            await _wait_until(all_delivered, 400, "every call delivered", interval=1.0)
            # the killed replica said nothing for longer than REPLICA_TTL: the others stop counting it
            assert await _wait_until(
                lambda: _eq(_replicas_counted(pg_empty_database), 2), 45, "the killed replica forgotten"
            )
            stats = await _sandbox_stats(http, f)
        except BaseException:
            print(f.logs())
            raise
    f.stop()  # SIGTERM: each survivor leaves the count as it shuts down, long before REPLICA_TTL
    assert await _replicas_counted(pg_empty_database) == 0

    charged = stats["charged_by_session"]
    assert len(charged) == calls
    assert set(charged.values()) == {1}, {k: v for k, v in charged.items() if v != 1}
    assert stats["credits_charged"] == calls
    # a POST repeated after the kill reuses its Idempotency-Key: answered from the cache, not charged
    assert stats["analysis_posts"] - calls <= 16
    assert stranded > 0
    assert set(sender.statuses) == {200}
    assert await _stuck_leases(pg_empty_database) == (0, 0)
    files = _delivered_files(f)
    assert len(files) == calls
    twice = {d: where for d, where in files.items() if len(where) > 1}
    # only a delivery in flight when replica2 died may have been written again by another replica
    assert all("replica2" in where and len(where) == 2 for where in twice.values()), twice
    assert len(twice) <= 8


@pytest.fixture
def outage_database(
    postgres_cluster: Cluster,  # noqa: F811
) -> Iterator[tuple[Cluster, str]]:
    """An empty database on the private cluster (this test stops and starts the server)."""
    name = f"kr_outage_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_cluster.url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(create())
    yield postgres_cluster, with_database(postgres_cluster.url, name)
    if not _running(postgres_cluster):
        postgres_cluster.start()
    run_sync(_drop(postgres_cluster.url, name))


def _running(cluster: Cluster) -> bool:
    return (cluster.datadir / "postmaster.pid").exists()


@pytest.mark.timeout(400)
async def test_postgres_stopped_for_ten_seconds_under_load_loses_nothing_and_answers_only_503(
    fleet: FleetFactory, outage_database: tuple[Cluster, str]
) -> None:
    cluster, database_url = outage_database
    calls = 300
    ports = [free_port() for _ in range(2)]
    f = fleet(database_url)
    f.start_sandbox(webhook_port=ports[0])
    replicas = [f.start_replica(port) for port in ports]
    readiness: Counter[int] = Counter()
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            for replica in replicas:
                await _wait_until(lambda r=replica: _ready(http, r), 60, f"{replica.name} ready")
            sender = Sender(http, replicas)
            sessions = [f"sess_{uuid.uuid4().hex[:12]}" for _ in range(calls)]
            gate = asyncio.Semaphore(8)

            async def one(index: int, session_id: str) -> None:
                async with gate:
                    await sender.send(_session_ended(session_id), index, deadline=180)
                    await asyncio.sleep(0.03)  # a steady stream over the outage

            load = asyncio.gather(*(one(i, s) for i, s in enumerate(sessions)))
            await _wait_until(
                lambda: _accepted(sender, calls // 4), 60, "a quarter of the calls accepted", interval=0.05
            )
            await asyncio.to_thread(cluster.stop, "fast")
            stopped_at = time.monotonic()
            while time.monotonic() - stopped_at < 10:
                for replica in replicas:
                    readiness[(await http.get(f"{replica.url}/readyz")).status_code] += 1
                await asyncio.sleep(0.5)  # deliberate: sample readiness through a 10 s outage
            await asyncio.to_thread(cluster.start)
            await load

            async def all_delivered() -> bool:
                return (await _calls_by_state(database_url)).get("delivered", 0) == calls

            await _wait_until(all_delivered, 180, "every call delivered", interval=1.0)
            for replica in replicas:
                await _wait_until(lambda r=replica: _ready(http, r), 30, f"{replica.name} ready again")
            stats = await _sandbox_stats(http, f)
        except BaseException:
            print(f.logs())
            raise

    assert readiness[503] > 0, readiness
    assert set(readiness) <= {200, 503}, readiness
    assert sender.statuses[503] > 0, sender.statuses
    assert set(sender.statuses) == {200, 503}, sender.statuses
    assert not sender.failures, sender.failures
    charged = stats["charged_by_session"]
    assert len(charged) == calls
    assert set(charged.values()) == {1}
    assert len(_delivered_files(f)) == calls
    assert all(replica.alive() for replica in replicas)


async def _accepted(sender: Sender, count: int) -> bool:
    return sender.statuses[200] >= count
