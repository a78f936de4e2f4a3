"""(d) The Kallglot rate budget: a backlog through a sandbox with a small limit, polling enabled.

For each window shape (limit per window) the harness starts the sandbox with that limit, half of
its webhooks dropped (so overdue analyses are polled and polls compete with starts for the same
budget) and the receiver with ``RECEIVER_POLL_AFTER_SECONDS=1``; it sends a backlog of calls
larger than the whole run can start, then counts at the sandbox, over the run: requests answered
(not 429) per second against the allowed rate, analyses started per second, and the share of
429s. The receiver learns the window from the first answers, so the count starts with the backlog.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: (limit, window seconds, run seconds); the quick mode uses shorter windows of the same shape.
FULL_SHAPES = [(10, 2.0, 60.0), (60, 60.0, 180.0), (600, 60.0, 180.0)]
QUICK_SHAPES = [(10, 2.0, 30.0), (20, 20.0, 60.0), (200, 20.0, 60.0)]
TARGET_USE = 0.95
TARGET_429 = 0.01


@dataclass(frozen=True)
class Shape:
    limit: int
    window: float
    seconds: float

    @property
    def name(self) -> str:
        return f"{self.limit} per {self.window:g} s"

    @property
    def allowed_per_s(self) -> float:
        return self.limit / self.window

    def backlog(self) -> int:
        """More calls than the run can start, so the budget is the only limit."""
        return math.ceil(self.allowed_per_s * self.seconds * 1.2) + self.limit


def shapes(quick: bool) -> list[Shape]:
    return [Shape(*s) for s in (QUICK_SHAPES if quick else FULL_SHAPES)]


def measure(
    shape: Shape, stats: Callable[[], dict[str, Any]], send_backlog: Callable[[int], None]
) -> dict[str, Any]:
    """Send the backlog, then count the sandbox's answers for ``shape.seconds``."""
    before = stats()
    t0 = time.monotonic()
    send_backlog(shape.backlog())
    time.sleep(max(0.0, shape.seconds - (time.monotonic() - t0)))
    after = stats()
    wall = time.monotonic() - t0
    counts: dict[str, int] = {}
    for status, n in after.get("status_counts", {}).items():
        counts[status] = n - before.get("status_counts", {}).get(status, 0)
    total = sum(counts.values())
    refused = counts.get("429", 0)
    starts = after.get("credits_charged", 0) - before.get("credits_charged", 0)
    used = (total - refused) / wall
    return {
        "shape": shape.name,
        "seconds": round(wall, 1),
        "backlog": shape.backlog(),
        "requests": total,
        "status_counts": counts,
        "requests_per_s": used,
        "allowed_per_s": shape.allowed_per_s,
        "use": used / shape.allowed_per_s,
        "starts_per_s": starts / wall,
        "share_429": refused / total if total else 0.0,
    }


def report_lines(runs: list[dict[str, Any]]) -> list[str]:
    out = [
        f"    {'shape':<16}{'req/s used':>11}{'allowed':>9}{'use':>8}{'starts/s':>10}{'429s':>8}{'requests':>10}"
    ]
    for r in runs:
        out.append(
            f"    {r['shape']:<16}{r['requests_per_s']:>11.2f}{r['allowed_per_s']:>9.2f}{r['use']:>8.1%}"
            f"{r['starts_per_s']:>10.2f}{r['share_429']:>8.2%}{r['requests']:>10}"
        )
    return out
