"""PostgreSQL schema: the migrations shipped in ``migrations/postgres``, applied in order under an
advisory lock so that replicas starting together queue instead of racing."""

from __future__ import annotations

import contextlib
import logging
import zlib
from importlib import resources
from typing import TYPE_CHECKING, Any

log = logging.getLogger("receiver")

#: ``pg_advisory_lock`` key that serialises ``migrate`` across replicas starting together.
MIGRATION_LOCK = zlib.crc32(b"kallglot-receiver:migrate")
_MIGRATION_TIMEOUT = 3600.0


def migrations() -> list[tuple[int, str]]:
    folder = resources.files("receiver.store").joinpath("migrations/postgres")
    out = [
        (int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(out)


class PostgresSchemaMixin:
    """Mixed into ``PostgresStore`` (which provides ``_conn`` and the ``_migrated`` flag)."""

    if TYPE_CHECKING:
        _migrated: bool

        def _conn(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Any]: ...

    async def migrate(self) -> int:
        """Apply pending migrations under an advisory lock: replicas starting together queue here."""
        async with self._conn() as conn:
            # Waiting for another replica's migrations may outlast command_timeout: wait long.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK, timeout=_MIGRATION_TIMEOUT)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version integer PRIMARY KEY, applied_at double precision NOT NULL)"
                )
                done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
                count = 0
                for version, sql in migrations():
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql, timeout=_MIGRATION_TIMEOUT)
                        await conn.execute(
                            "INSERT INTO schema_migrations VALUES ($1, extract(epoch FROM now()))", version
                        )
                    log.info("store.migration_applied", extra={"version": version})
                    count += 1
            finally:
                try:
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
                except BaseException:
                    conn.terminate()  # the pool does not reset sessions: ending this one frees the lock
                    raise
        self._migrated = True
        return count
