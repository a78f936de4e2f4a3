"""The serve lock of an SQLite file: an ``flock`` held by the one ``serve`` process using it.

Leases in an SQLite file can only be stale when the process that took them is dead. The lock is
how a starting ``serve`` knows that: the kernel drops it when its holder dies (even SIGKILL), so
whoever holds it is the only live serve, and every lease it finds belongs to a dead one.
Operator commands never take it and never release leases.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class ServeLock:
    """``{database}.serve-lock`` beside the database file, held until ``release``."""

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}.serve-lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another live process does."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
