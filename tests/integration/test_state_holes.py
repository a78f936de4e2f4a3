"""Issue 8 holes 7, 8, 9 and 12 through the real service, a real sandbox and both stores.

The use cases are wired without worker loops here where a test must act between two steps of one
call: a "rolling update" is a second set of use cases with other settings on the same database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from receiver.app import UseCases, analysis_settings, wire
from receiver.commands.send import build_event
from receiver.events import parse_kallglot_event
from receiver.kallglot import MAX_RETRY_AFTER_SECONDS, KallglotClient, RateLimited, Unavailable
from receiver.lifecycle import CallState
from receiver.metrics import Metrics
from receiver.sandbox import DEV_API_KEY, Sandbox
from receiver.store import EventOutcome, Store, open_store
from receiver.workers import Starter
from tests.integration.harness import receiver_settings, sandbox_config, start_server, stop_server, wait_for

FAR = 10_000.0  # seconds: "later", past every backoff


@dataclass
class World:
    sandbox: Sandbox
    sandbox_url: str
    store: Store
    database: str
    clients: list[KallglotClient]

    def service(self, **settings: Any) -> UseCases:
        """The use cases the app would wire, over the test's store and a client of the sandbox."""
        values = receiver_settings(self.sandbox_url, self.database, "http://127.0.0.1:9", _tmp(), **settings)
        metrics = Metrics()
        client = KallglotClient(f"{self.sandbox_url}/v1", DEV_API_KEY, metrics=metrics)
        self.clients.append(client)
        return wire(self.store, client, {}, metrics, analysis_settings(values), time.time, (5.0, 10.0))


def _tmp() -> Path:
    return Path("/nonexistent")


@pytest.fixture
async def world(database: str) -> AsyncIterator[World]:
    box = Sandbox(sandbox_config())
    server, url = await start_server(box.app)
    store = open_store(database)
    await store.open()
    await store.migrate()
    world = World(box, url, store, database, [])
    yield world
    for client in world.clients:
        await client.aclose()
    await store.close()
    await stop_server(server)


async def _announce(service: UseCases, session_id: str, event_id: str | None = None) -> EventOutcome:
    payload = build_event("session.ended", session_id, None, time.time())
    if event_id:
        payload["id"] = event_id
    return await service.intake.accept_kallglot(parse_kallglot_event(json.dumps(payload).encode()))


async def _claim_one(store: Store, session_id: str, now: float, owner: str = "test") -> Any:
    calls = await store.claim_calls_to_start(10, now, 120.0, owner)
    assert [c.session_id for c in calls] == [session_id]
    return calls[0]


async def _state(store: Store, session_id: str) -> CallState:
    found = await store.get_call(session_id)
    assert found is not None
    return found[0].state


# --- hole 7 ----------------------------------------------------------------------------------


async def test_settings_changed_between_an_accepted_post_and_its_answer_keep_the_paid_analysis(
    world: World,
) -> None:
    before = world.service(analysis_include="summary,sentiment", analysis_profile="general")
    assert await _announce(before, "sess_h7") is EventOutcome.ACCEPTED
    world.sandbox.update_config({"error_after_effect_rate": 1.0})  # accepted and charged, answer lost
    await before.starting.start(await _claim_one(world.store, "sess_h7", time.time()))
    assert await _state(world.store, "sess_h7") is CallState.STARTING
    assert world.sandbox.stats()["credits_charged"] == 1
    # a rolling update reorders and extends the list before the retry
    world.sandbox.update_config({"error_after_effect_rate": 0.0})
    after = world.service(analysis_include="keywords,sentiment,summary", analysis_profile="sales")
    await after.starting.start(await _claim_one(world.store, "sess_h7", time.time() + FAR))
    assert await _state(world.store, "sess_h7") in (CallState.PROCESSING, CallState.COMPLETED)
    stats = world.sandbox.stats()
    assert stats["credits_charged"] == 1
    assert "400" not in {str(k) for k in stats["status_counts"]}


# --- hole 8 ----------------------------------------------------------------------------------


async def test_a_session_announced_again_after_its_call_was_pruned_costs_no_second_credit(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    service = world.service()
    assert await _announce(service, "sess_h8") is EventOutcome.ACCEPTED
    await service.starting.start(await _claim_one(world.store, "sess_h8", time.time()))

    async def polled_until_done() -> bool:
        for call in await world.store.claim_calls_to_poll(10, time.time() + FAR, 0.01, "test"):
            await service.following.poll(call)
        return await _state(world.store, "sess_h8") is CallState.DELIVERED  # no handler: at once

    await wait_for(polled_until_done, timeout=10, what="the analysis to finish")
    later = time.time() + 31 * 86400
    assert await world.store.prune(later, later, 100) == (1, 1)
    with caplog.at_level(logging.WARNING, logger="receiver"):
        caplog.clear()  # what the run logged so far (all of it, when the suite runs at DEBUG)
        assert await _announce(service, "sess_h8", "evt_again") is EventOutcome.DUPLICATE
    assert [r.getMessage() for r in caplog.records] == ["call.already_analysed"]
    assert await world.store.claim_calls_to_start(10, time.time() + FAR, 120.0, "test") == []
    assert world.sandbox.stats()["credits_charged"] == 1


async def test_a_start_waiting_longer_than_its_lease_keeps_the_call(world: World) -> None:
    service = world.service()
    assert await _announce(service, "sess_lease") is EventOutcome.ACCEPTED
    world.sandbox.update_config({"response_delay_seconds": 3.0})  # a slow answer
    starter = Starter(service.starting, service.wakeups, tick=0.05, lease=0.5)
    claimed_at = time.time()
    assert await starter.run_once() == 1
    await wait_for(
        lambda: world.sandbox.stats()["analysis_posts"] == 1, timeout=5, what="the POST to reach the sandbox"
    )
    # let real time pass well beyond the first lease (0.5 s) while the answer is still on its way
    await asyncio.sleep(max(0.0, claimed_at + 1.5 - time.time()))
    assert world.sandbox.stats()["credits_charged"] == 0, "the answer should still be on its way"
    other = await world.store.claim_calls_to_start(10, time.time(), 120.0, "other-replica")
    assert other == []
    await starter.drain(10)
    assert await _state(world.store, "sess_lease") is not CallState.STARTING
    assert world.sandbox.stats()["credits_charged"] == 1


async def _huge_waits() -> tuple[Any, str]:
    async def too_many(request: Request) -> JSONResponse:
        return JSONResponse({"error": {"code": "rate_limit_exceeded"}}, 429, {"Retry-After": "90000"})

    async def broken(request: Request) -> JSONResponse:
        return JSONResponse({"error": {"code": "internal", "retry_after": 1e12}}, 503)

    app = Starlette(routes=[Route("/v1/sessions/{sid}", too_many), Route("/v1/analyses/{aid}", broken)])
    return await start_server(app)


async def test_no_answer_makes_the_receiver_wait_anywhere_near_the_idempotency_window() -> None:
    server, url = await _huge_waits()
    limited_client = KallglotClient(f"{url}/v1", DEV_API_KEY, metrics=Metrics())
    client = KallglotClient(f"{url}/v1", DEV_API_KEY, metrics=Metrics())
    try:
        with pytest.raises(RateLimited) as limited:
            await limited_client.get_session("sess_1")
        assert limited.value.retry_after == MAX_RETRY_AFTER_SECONDS
        with pytest.raises(Unavailable) as unavailable:
            await client.get_analysis("anl_1")
        assert unavailable.value.retry_after == MAX_RETRY_AFTER_SECONDS
    finally:
        await limited_client.aclose()
        await client.aclose()
        await stop_server(server)
    assert MAX_RETRY_AFTER_SECONDS <= 3600 < 24 * 3600


# --- hole 12 ---------------------------------------------------------------------------------


async def test_credits_seen_on_any_answer_reopen_the_start_gate_at_once(world: World) -> None:
    service = world.service()
    world.sandbox.update_config({"credits": 0})
    assert await _announce(service, "sess_402") is EventOutcome.ACCEPTED
    starter = Starter(service.starting, service.wakeups, tick=0.05)
    assert await starter.run_once() == 1
    await starter.drain(10)
    assert service.starting.gate.reason is not None
    assert service.starting.gate.paused_until > time.time() + 3  # the next probe is seconds away
    assert await starter.run_once() == 0
    world.sandbox.update_config({"credits": 50})
    await service.sessions.info("sess_other")  # any authenticated answer carries the balance
    reopened = time.time()
    assert await starter.run_once() == 1
    await starter.drain(10)
    assert time.time() - reopened < 3
    assert await _state(world.store, "sess_402") in (CallState.PROCESSING, CallState.COMPLETED)
    assert world.sandbox.stats()["credits_charged"] == 1


def test_the_probe_interval_never_exceeds_its_cap() -> None:
    from receiver.gate import Allowance, StartGate

    gate = StartGate(time.time, Metrics(), min_pause=15.0, max_pause=30.0)
    waits = [gate.pause("HTTP 402", 0.0, for_credits=True) for _ in range(10)]
    assert max(waits) == 30.0
    assert not gate.observe_credits(None, 0)
    assert not gate.observe_credits(0, 0)
    assert gate.observe_credits(1, 0)
    assert (gate.reason, gate.allowance(0.0)) == (None, Allowance.OPEN)
    gate.pause("HTTP 403 organization_inactive", 0.0)
    assert not gate.observe_credits(100, 0)  # a balance does not fix an inactive organization


def test_settings_default_and_bounds() -> None:
    from receiver.settings import ConfigError, load_settings

    settings = load_settings(sandbox=True)
    assert (settings.start_probe_max_seconds, settings.session_memory_days) == (30.0, 90.0)
    with pytest.raises(ConfigError, match="RECEIVER_SESSION_MEMORY_DAYS"):
        load_settings(sandbox=True, retention_days=120)
    with pytest.raises(ConfigError, match="RECEIVER_START_PROBE_MAX_SECONDS"):
        load_settings(sandbox=True, start_probe_max_seconds=0)


# --- hole 9 (detection) ----------------------------------------------------------------------


async def test_deliveries_of_a_removed_handler_are_orphaned_at_start_up_and_shown(
    database: str, make_stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from receiver.store import AnalysisResult
    from tests.integration.harness import metric_value

    store = open_store(database)
    await store.open()
    await store.migrate()
    now = time.time()
    for session in ("sess_o1", "sess_o2"):
        await store.accept_call("kallglot", f"evt_{session}", "session.ended", _new(session), now)
        await store.claim_calls_to_start(10, now, 60.0, "earlier-run")
        await store.mark_started(session, f"anl_{session}", now + 30, now)
        result = AnalysisResult(
            session, f"anl_{session}", CallState.COMPLETED, {"status": "completed"}, "poll"
        )
        await store.record_result(result, ["crm_renamed"], now)
    await store.close()
    with caplog.at_level(logging.WARNING, logger="receiver"):
        stack = await make_stack()
    orphaned = [r for r in caplog.records if r.getMessage() == "delivery.orphaned"]
    assert [(r.__dict__["handler"], r.__dict__["count"]) for r in orphaned] == [("crm_renamed", 2)]
    text = await stack.metrics()
    assert metric_value(text, "receiver_orphaned_deliveries", handler="crm_renamed") == 2
    assert metric_value(text, "receiver_backlog", stage="delivery") == 0


def _new(session: str) -> Any:
    from receiver.store import NewCall

    return NewCall(session, f"key-{session}")
