"""How an operator command fails: one line and an exit code scripts can rely on (CONTRACT §9)."""

from __future__ import annotations

import sys

SUCCESS, FAILED, USAGE = 0, 1, 2


class CommandFailed(Exception):
    """Print ``message`` (one line) and exit with ``code`` (1: failed or not found; 2: usage or
    configuration)."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str) -> int:
    """Print ``message`` as the CLI's one error line; the usage/configuration exit code."""
    print(f"kallglot-receiver: {message}", file=sys.stderr)
    return USAGE
