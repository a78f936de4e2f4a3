"""handlers._analysis.ended_at: an unusable date falls back, it never fails a delivery."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from handlers import _analysis

FALLBACK = datetime(2026, 3, 26, 11, 4, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    ["yesterday", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", 42, None, ["2026"]],
    ids=["not-a-date", "overflows-forward", "overflows-back", "number", "absent", "list"],
)
def test_an_unusable_ended_at_gives_the_fallback(raw: Any) -> None:
    moment = _analysis.ended_at({"ended_at": raw}, FALLBACK)
    assert moment == FALLBACK
    # What HubSpot and Salesforce do with it must work too.
    int(moment.timestamp() * 1000)
    moment.astimezone(UTC).date().isoformat()


def test_a_usable_ended_at_is_kept_and_naive_times_are_utc() -> None:
    assert _analysis.ended_at({"ended_at": "2026-01-02T03:04:05"}, FALLBACK) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
