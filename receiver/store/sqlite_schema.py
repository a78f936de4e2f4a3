"""SQLite schema: the migrations shipped in ``migrations/sqlite``, applied in order, and the lease
release of a serve that proved it is alone. Functions run on the database thread."""

from __future__ import annotations

import functools
import sqlite3
from importlib import resources


@functools.cache
def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("receiver.store").joinpath("migrations/sqlite")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    count = 0
    for version, sql in _migrations():
        if version in done:
            continue
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, strftime('%s', 'now'))", (version,))
        count += 1
    return count


def is_migrated(conn: sqlite3.Connection) -> bool:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return False
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return all(version in done for version, _ in _migrations())


def release_all_leases(conn: sqlite3.Connection) -> int:
    calls = conn.execute(
        "UPDATE calls SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL"
    ).rowcount
    deliveries = conn.execute(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL"
    ).rowcount
    conn.execute("DELETE FROM replicas")  # this serve is alone: whoever else was seen has died
    return int(calls) + int(deliveries)
