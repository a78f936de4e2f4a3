"""PostgreSQL wake-ups: LISTEN on a dedicated connection for the other replicas' NOTIFYs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

log = logging.getLogger("receiver")

CHANNEL = "kallglot_receiver"


class PostgresListenerMixin:
    """Mixed into ``PostgresStore`` (which provides the URL, the timeout and its own token)."""

    if TYPE_CHECKING:
        _url: str
        _connect_timeout: float
        _token: str
        _listener: asyncio.Task[None] | None

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """LISTEN on a dedicated connection (reconnecting with backoff); other replicas' NOTIFYs
        call ``callback(kind)``. After a reconnect every kind is woken: notifications sent while
        we were away are lost, the work they announced is not."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(callback), name="store-listener"
            )

    async def _listen(self, callback: Callable[[str], None]) -> None:
        failures = 0
        while True:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=self._connect_timeout)
                lost = asyncio.Event()

                def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
                    kind, _, token = str(payload).partition(":")
                    if token != self._token:
                        callback(kind)

                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, on_notify)
                if failures:
                    log.info("store.listener_reconnected")
                    for kind in ("start", "poll", "deliver"):
                        callback(kind)
                failures = 0
                while not lost.is_set():
                    # A silent network loss is only noticed by talking: ping now and then.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=15.0)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=5.0)
                raise ConnectionError("listener connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("store.listener_down", extra={"error": str(exc), "retry_in": delay})
                await asyncio.sleep(delay)
            finally:
                if conn is not None:
                    conn.terminate()
