"""PostgreSQL for tests: a server, a migrated template, and a fresh database per test cloned from it.

``postgres_url`` is ``RECEIVER_TEST_POSTGRES_URL`` when set (any server where we may CREATE
DATABASE); otherwise a private cluster started with the OS packages' initdb/pg_ctl in a temporary
directory, on a free port, fsync off, and removed at the end of the session (installed with
apt-get first when the binaries are missing). A PostgreSQL test never skips: if no server can be
had, it fails loudly.

Import the fixtures you use into the test module (``from tests.pg import pg_database  # noqa: F401``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from receiver.store.postgres import PostgresStore

T = TypeVar("T")
ENV = "RECEIVER_TEST_POSTGRES_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a private loop in a thread (safe from sync fixtures)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _install_postgres() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]
    if subprocess.run(command, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(command, env=env, capture_output=True, check=False)


@dataclass
class Cluster:
    """A private PostgreSQL cluster that tests may stop and start (outage tests)."""

    bindir: Path
    datadir: Path
    port: int
    as_user: list[str]  # the command prefix that runs as the non-root OS user

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        result = self._pg_ctl(
            "start", "-w", "-t", "60", "-l", str(self.datadir / "server.log"), "-o", options
        )
        if result.returncode != 0:  # pragma: no cover
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-w", "-m", mode, check=False)


def start_cluster() -> tuple[Cluster, Path]:
    """initdb + pg_ctl start in a fresh temporary directory; fails (never skips) when impossible."""
    bindir = _binaries()
    if bindir is None:
        _install_postgres()
        bindir = _binaries()
    if bindir is None:
        pytest.fail(f"PostgreSQL tests need initdb/pg_ctl (apt-get install postgresql) or {ENV}")
    root = Path(tempfile.mkdtemp(prefix="kr-pg-"))
    datadir = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres OS user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs the 'postgres' OS user for initdb")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    init = subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.strip()}")
    cluster = Cluster(bindir, datadir, free_port(), as_user)
    try:
        cluster.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        log = (
            (datadir / "server.log").read_text(errors="replace") if (datadir / "server.log").exists() else ""
        )
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"cannot start a private PostgreSQL: {exc}\n{log[-2000:]}")
    return cluster, root


@contextlib.contextmanager
def private_cluster() -> Iterator[Cluster]:
    cluster, root = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A private cluster for this session (tests that stop the server need one of their own)."""
    with private_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A server URL (database ``postgres`` or the one given) where tests may create databases."""
    url = os.environ.get(ENV)
    if url:
        return url
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return cluster.url


async def _admin(url: str) -> asyncpg.Connection[asyncpg.Record]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _create_template(url: str, name: str) -> None:
    admin = await _admin(url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    store = PostgresStore(with_database(url, name), min_size=1, max_size=1)
    await store.open()
    try:
        await store.migrate()
    finally:
        await store.close()


async def _drop(url: str, name: str) -> None:
    admin = await _admin(url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """The name of a database migrated once per session; tests get clones of it."""
    name = f"kr_template_{os.getpid()}"
    run_sync(_create_template(postgres_url, name))
    yield name
    run_sync(_drop(postgres_url, name))


async def clone_database(postgres_url: str, template: str) -> str:
    """A fresh database cloned from ``template``; returns its name."""
    name = f"kr_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    return name


@pytest.fixture
async def pg_database(postgres_url: str, postgres_template: str) -> AsyncIterator[str]:
    """The URL of a fresh, migrated database for one test, dropped afterwards."""
    name = await clone_database(postgres_url, postgres_template)
    yield with_database(postgres_url, name)
    await _drop(postgres_url, name)


@pytest.fixture
async def pg_empty_database(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a fresh database with no schema at all (migration tests)."""
    name = f"kr_empty_{uuid.uuid4().hex[:12]}"
    admin = await _admin(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(postgres_url, name)
    await _drop(postgres_url, name)
