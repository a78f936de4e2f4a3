"""The store under test, once per backend: SQLite in a temporary file, PostgreSQL in a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver.store import Store
from receiver.store.postgres import PostgresStore
from receiver.store.sqlite import SQLiteStore
from tests.pg import (  # noqa: F401
    pg_database,
    pg_empty_database,
    postgres_cluster,
    postgres_template,
    postgres_url,
)
from tests.store.transitions import watched


@dataclass
class Backend:
    """The store under test and a second view of the same database (another replica for PostgreSQL;
    the same store for SQLite, which serves one process)."""

    name: str
    store: Store
    other: Store


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend (PostgreSQL: cloned from the migrated template)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/receiver.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
async def backend(database_url: str) -> AsyncIterator[Backend]:
    if database_url.startswith("sqlite:///"):
        sqlite = SQLiteStore(database_url.removeprefix("sqlite:///"))
        await sqlite.open()
        await sqlite.migrate()
        checked = watched(sqlite, database_url)
        yield Backend("sqlite", checked, checked)
        await sqlite.close()
        return
    first, second = PostgresStore(database_url, max_size=8), PostgresStore(database_url, max_size=8)
    await first.open()
    await second.open()
    yield Backend("postgres", watched(first, database_url), watched(second, database_url))
    await first.close()
    await second.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store
