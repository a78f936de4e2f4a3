"""One Kallglot rate budget: a backlog through a tight limit, starts and polls competing, no 429 storm."""

from __future__ import annotations

from tests.integration.conftest import StackFactory


async def test_a_backlog_through_a_tight_limit_gets_almost_no_429s(make_stack: StackFactory) -> None:
    # Half the webhooks are lost, so polling competes with starting for the same 10 per second.
    stack = await make_stack(
        sandbox={"rate_limit": 10, "rate_limit_window_seconds": 1.0, "webhook_drop_rate": 0.5},
        poll_after_seconds=0.5,
    )
    sessions = [f"sess_budget{i}" for i in range(30)]

    for session in sessions:
        await stack.session_ended(session)
    for session in sessions:
        await stack.wait_state(session, "delivered", timeout=60)

    stats = stack.stats()
    counts = stats["status_counts"]
    total = sum(counts.values())
    assert all(stats["charged_by_session"][s] == 1 for s in sessions)
    assert total >= 30 + 1  # at least every start and one poll went out
    assert counts.get("429", 0) <= max(1, total // 100), counts
