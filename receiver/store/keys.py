"""Deterministic keys: the same input gives the same key in every replica, after every restart."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


ANALYSIS_KEY_PREFIX = "kr-analysis-"


def analysis_key(session_id: str, profile: str, include: Sequence[str]) -> str:
    """The ``Idempotency-Key`` of an analysis: session id and analysis settings, nothing else."""
    return ANALYSIS_KEY_PREFIX + _digest(session_id, profile, ",".join(sorted(include)))[:40]


def end_session_key(analysis_key: str) -> str:
    """The ``Idempotency-Key`` of ``POST /sessions/{id}/end`` before that analysis: the analysis
    key's digest under its own prefix (derived from the key kept with the call, so a call accepted
    under other analysis settings keeps the key its first attempt sent)."""
    return "kr-end-" + analysis_key.removeprefix(ANALYSIS_KEY_PREFIX)


def delivery_id(session_id: str, handler: str) -> str:
    """The id of the (call, handler) delivery, stable across retries and replays (``webhook-id``)."""
    return "dlv_" + _digest(session_id, handler)[:32]
