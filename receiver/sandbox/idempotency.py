"""``Idempotency-Key`` bookkeeping: replay, mismatch, in-flight conflict, 24 h TTL; pure, injected time.

Only successful (2xx) responses are remembered, like Kallglot's "same status and body as the first
successful response": a request that ended in an error releases its key so that a retry can succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import errors

TTL_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Replay:
    """The response to send again, verbatim."""

    status: int
    body: dict[str, Any]


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    expires_at: float
    response: Replay | None = None


class IdempotencyCache:
    """Keys in arrival order, so that expired ones are swept from the front in O(1) each."""

    def __init__(self, ttl_seconds: float = TTL_SECONDS) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                return
            del self._entries[key]

    def begin(self, key: str, fingerprint: str, now: float) -> Replay | None:
        """Claim ``key`` for a new request (None), or the earlier response to replay; raise 400/409."""
        self._sweep(now)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= now:
            del self._entries[key]
            entry = None
        if entry is None:
            self._entries[key] = _Entry(fingerprint, now + self.ttl_seconds)
            return None
        if entry.fingerprint != fingerprint:
            raise errors.idempotency_mismatch()
        if entry.response is None:
            raise errors.idempotency_conflict(1)
        return entry.response

    def finish(self, key: str, status: int, body: dict[str, Any]) -> None:
        """Remember a successful response for ``key``; forget the key after anything else."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if 200 <= status < 300:
            entry.response = Replay(status, body)
        else:
            del self._entries[key]

    def release(self, key: str) -> None:
        """Forget a claim whose request ended without a response worth keeping."""
        entry = self._entries.get(key)
        if entry is not None and entry.response is None:
            del self._entries[key]
