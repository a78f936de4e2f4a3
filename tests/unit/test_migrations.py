"""The shipped migrations, read as files: what a rolling update needs of them.

During a rolling update the pre-upgrade Job migrates while pods of the previous release still run,
so a migration may only add (tables, columns, indexes): a column the code stops using is dropped a
release later. Both stores ship the same versions, so a database never depends on which store it is.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

STORES = ("sqlite", "postgres")
#: Statements that break SQL a pod of the previous release may still run.
BREAKING = re.compile(r"\b(DROP\s+(TABLE|COLUMN)|RENAME\b|ALTER\s+COLUMN)", re.IGNORECASE)


def _migrations(store: str) -> dict[str, str]:
    folder = resources.files("receiver.store").joinpath(f"migrations/{store}")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    }


def _without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


@pytest.mark.parametrize("store", STORES)
def test_migrations_only_add_so_the_previous_release_keeps_running(store: str) -> None:
    found = {name: BREAKING.findall(_without_comments(sql)) for name, sql in _migrations(store).items()}
    assert _migrations(store), f"no migration shipped for {store}"
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_both_stores_ship_the_same_versions() -> None:
    versions = {store: sorted(name.split("_", 1)[0] for name in _migrations(store)) for store in STORES}
    assert versions["sqlite"] == versions["postgres"]
    assert len(set(versions["sqlite"])) == len(versions["sqlite"]), "two migrations share a version"


def test_the_breaking_pattern_catches_what_it_is_for() -> None:
    for statement in (
        "ALTER TABLE calls DROP COLUMN session_ended",
        "drop table replays",
        "ALTER TABLE calls RENAME COLUMN reason TO why",
        "ALTER TABLE calls ALTER COLUMN reason TYPE varchar(10)",
    ):
        assert BREAKING.search(statement), statement
    assert not BREAKING.search("ALTER TABLE calls ADD COLUMN dropped_at REAL")
