"""The pacer, the start gate and the starter loop together, on a virtual clock, on both stores.

``create_app(clock=..., kallglot_transport=..., store=...)`` wires the real receiver; its Kallglot is
a real sandbox app on the same virtual clock, reached in process (``httpx.ASGITransport``: a seam,
not a mock). The background loops are stopped right after start-up, so each step of a table is one
``Starter.run_once()`` at a virtual instant: no wall-clock waits decide anything here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from receiver.app import Runtime, admin_app, create_app
from receiver.commands.send import build_event
from receiver.lifecycle import CallState
from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET, Sandbox
from receiver.signing import sign_kallglot
from receiver.workers import REPLICA_TTL, Deliverer, Heartbeat, Loop, Poller, Starter
from tests.integration.harness import (
    ADMIN_TOKEN,
    SINK_SECRET,
    Sink,
    metric_value,
    receiver_settings,
    sandbox_config,
    start_server,
    stop_server,
)
from tests.sandbox.support import FakeClock

SANDBOX = "http://sandbox.test"
LoopT = TypeVar("LoopT", bound=Loop)


@dataclass
class Core:
    clock: FakeClock
    sandbox: Sandbox
    app: Starlette
    receiver: httpx.AsyncClient  # the public listener
    admin: httpx.AsyncClient  # the admin listener: what happened is read where operators read it

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    @property
    def starter(self) -> Starter:
        return self.loop(Starter)

    async def announce(self, session_id: str) -> None:
        body = json.dumps(build_event("session.ended", session_id, None, self.clock())).encode()
        signature = sign_kallglot(DEV_WEBHOOK_SECRET, int(self.clock()), body)
        response = await self.receiver.post(
            "/webhooks/kallglot", content=body, headers={"Kallglot-Signature": signature}
        )
        assert response.status_code == 200, response.text

    async def step(self, loop: Loop | None = None) -> int:
        """One pass of a loop (the starter unless said) at the current virtual instant; what it
        launched runs to its end."""
        loop = loop or self.starter
        launched = await loop.run_once()
        assert await loop.drain(10) == 0, f"work of the {loop.name} did not finish"
        return launched

    def loop(self, kind: type[LoopT]) -> LoopT:
        found = [loop for loop in self.runtime.loops if isinstance(loop, kind)]
        assert len(found) == 1
        return found[0]

    async def state(self, session_id: str) -> CallState:
        response = await self.admin.get(f"/admin/calls/{session_id}")
        assert response.status_code == 200, response.text
        return CallState(response.json()["state"])

    async def metric(self, name: str, **labels: str) -> float:
        return metric_value((await self.admin.get("/metrics")).text, name, **labels)


CoreFactory = Callable[..., Awaitable[Core]]


@pytest.fixture
async def make_core(database: str, tmp_path: Path) -> AsyncIterator[CoreFactory]:
    started: list[tuple[Any, httpx.AsyncClient, httpx.AsyncClient]] = []
    clock = FakeClock(1_790_000_000.0)

    async def make(
        handlers: list[dict[str, Any]] | None = None, settings: dict[str, Any] | None = None, **knobs: Any
    ) -> Core:
        """A receiver and its sandbox; ``settings`` override the receiver's, ``knobs`` the sandbox's."""
        sandbox = Sandbox(sandbox_config(**knobs), clock=clock)
        files = [{"name": "files", "type": "file", "path": f"{tmp_path}/"}]
        overrides = {"handlers": handlers or files, **(settings or {})}
        settings = receiver_settings(SANDBOX, database, "http://127.0.0.1:9", tmp_path, **overrides)
        app = create_app(
            settings,
            clock=clock,
            kallglot_transport=httpx.ASGITransport(app=sandbox.app),
            pause_seconds=(15.0, 30.0),
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        receiver = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver.test")
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=admin_app(app)),
            base_url="http://admin.test",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        started.append((lifespan, receiver, admin))
        core = Core(clock, sandbox, app, receiver, admin)
        core.runtime.stop.set()  # the loops stop: the test runs them, one pass at a time
        for task in core.runtime.tasks:
            await task
        return core

    yield make
    for lifespan, receiver, admin in started:
        await receiver.aclose()
        await admin.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_a_429_holds_the_starter_until_retry_after_then_one_start_costs_one_credit(
    make_core: CoreFactory,
) -> None:
    core = await make_core(rate_limit=1, rate_limit_window_seconds=60)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=core.sandbox.app),
        base_url=SANDBOX,
        headers={"Authorization": f"Bearer {DEV_API_KEY}"},
    ) as other_client:  # another client of the organisation spends the window's only request
        assert (await other_client.get("/v1/sessions/sess_other")).status_code == 200
    await core.announce("sess_paced")
    blocked_from = core.clock()

    # (seconds after the 429, what run_once launches, the call's state after the pass)
    table = [
        (0.0, 1, CallState.STARTING),  # the first start meets the 429: the call waits for Retry-After
        (1.0, 0, CallState.STARTING),  # the budget blocks every start until then
        (59.0, 0, CallState.STARTING),
        (60.5, 1, CallState.PROCESSING),  # a new window: the start goes, once
        (120.0, 0, CallState.PROCESSING),  # nothing left to start
    ]
    for after, launched, state in table:
        core.clock.now = blocked_from + after
        assert (after, await core.step()) == (after, launched)
        assert (after, await core.state("sess_paced")) == (after, state)
    stats = core.sandbox.stats()
    assert (stats["analysis_posts"], stats["credits_charged"]) == (2, 1)


async def test_the_gate_probes_once_per_pause_doubles_it_to_its_cap_and_reopens_on_success(
    make_core: CoreFactory,
) -> None:
    core = await make_core(credits=0)
    await core.announce("sess_gate1")
    t0 = core.clock()

    # (seconds from the start, credits to set first, launched, the gate's reason is set after)
    table: list[tuple[float, int | None, int, bool]] = [
        (0.0, None, 1, True),  # the 402 pauses starting for 15 s
        (14.0, None, 0, True),  # paused (a second call arrives now)
        (15.0, None, 1, True),  # ONE probe of the two due calls; refused: the pause doubles to 30 s
        (44.0, None, 0, True),
        (45.0, None, 1, True),  # probe; refused: the pause stays at its 30 s cap
        (74.0, None, 0, True),
        (75.0, 5, 1, False),  # the account is topped up: the probe succeeds and the gate opens
        # the other call goes at once, no pause left (the pacer spaces two requests by 60 s / 100000
        # even so: on a virtual clock that gap must pass, or the second request would wait forever)
        (75.001, None, 1, False),
    ]
    for at, credits, launched, paused in table:
        core.clock.now = t0 + at
        if credits is not None:
            core.sandbox.update_config({"credits": credits})
        assert (at, await core.step()) == (at, launched)
        assert (at, await core.metric("receiver_credits_paused")) == (at, 1 if paused else 0)
        if at == 14.0:
            await core.announce("sess_gate2")
    assert {await core.state("sess_gate1"), await core.state("sess_gate2")} == {CallState.PROCESSING}
    assert core.sandbox.stats()["credits_charged"] == 2


async def test_the_circuit_stops_the_deliverer_probes_once_per_opening_and_closes_on_success(
    make_core: CoreFactory,
) -> None:
    sink = Sink(fail_with=500)
    server, sink_url = await start_server(sink.app())
    try:
        core = await make_core(
            handlers=[
                {
                    "name": "sink",
                    "type": "webhook",
                    "url": f"{sink_url}/hook",
                    "secret": SINK_SECRET,
                    "concurrency": 1,
                    "retry": {"initial_seconds": 0.05, "max_seconds": 0.2, "horizon_seconds": 300},
                    "circuit": {"failure_threshold": 3, "open_seconds": 10},
                }
            ]
        )
        t0 = core.clock()
        # One call at a time: the pacer spaces requests (60 s / 100000 here), and on a virtual clock
        # that gap must pass between two of them, or the second would wait forever.
        for n in range(3):
            core.clock.now = t0 + n * 0.01
            await core.announce(f"sess_circuit{n}")
            assert await core.step() == 1
        for n in range(3):  # each is due 0.5 s after its start (and the sandbox took 0.05 s)
            core.clock.now = t0 + 0.505 + n * 0.01
            assert await core.step(core.loop(Poller)) == 1
        deliverer = core.loop(Deliverer)

        # (seconds from the start, the sink is fixed first, launched, sink attempts so far, open after)
        table = [
            (10.0, False, 1, 1, False),
            (11.0, False, 1, 2, False),
            (12.0, False, 1, 3, True),  # the third failure in a row opens it until 22
            (13.0, False, 0, 3, True),  # due deliveries wait: the sink is not hammered
            (21.9, False, 0, 3, True),
            (22.0, False, 1, 4, True),  # one probe; it fails: open until 32
            (31.9, True, 0, 4, True),  # fixed, but nobody knows yet
            (32.0, False, 1, 5, False),  # the probe succeeds: closed
            (33.0, False, 1, 6, False),
            (34.0, False, 1, 7, False),
            (35.0, False, 0, 7, False),  # all three delivered
        ]
        for at, fixed, launched, attempts, is_open in table:
            core.clock.now = t0 + at
            if fixed:
                sink.fail_with = None
            assert (at, await core.step(deliverer)) == (at, launched)
            is_open_now = await core.metric("receiver_handler_circuit_open", handler="sink")
            assert (at, sink.attempts, is_open_now) == (at, attempts, 1 if is_open else 0)
        assert sorted(sink.ids()) == [f"sess_circuit{n}" for n in range(3)]
        for n in range(3):
            assert await core.state(f"sess_circuit{n}") is CallState.DELIVERED
    finally:
        await stop_server(server)


@pytest.mark.parametrize(
    ("configured", "shares"),
    [(None, (1.0, 0.5, 1.0)), ("0.25", (0.25, 0.25, 0.25))],
    ids=["auto", "fixed"],
)
async def test_replicas_split_the_rate_limit_unless_a_share_is_set(
    make_core: CoreFactory, configured: str | None, shares: tuple[float, float, float]
) -> None:
    core = await make_core(settings={"kallglot_rate_share": configured})
    heartbeat = core.loop(Heartbeat)
    store = core.runtime.http.store
    budget = core.starter.starting.kallglot.throttle.budget
    # counted at start-up, before any loop runs: its first request to Kallglot already has its share
    assert await core.metric("receiver_replicas") == 1
    assert budget.share == pytest.approx(shares[0])

    # (what another replica does before the pass, replicas counted, this replica's share)
    table = [
        (None, 1, shares[0]),
        ("heartbeat", 2, shares[1]),  # another serve on the same store says it is alive
        ("quiet", 1, shares[2]),  # it said nothing for longer than REPLICA_TTL: not counted
    ]
    for other, replicas, share in table:
        if other == "heartbeat":
            assert await store.replicas_alive("another-replica", core.clock(), REPLICA_TTL) == 2
        elif other is not None:
            core.clock.advance(REPLICA_TTL + 1)
        await core.step(heartbeat)
        assert await core.metric("receiver_replicas") == replicas, other
        assert await core.metric("kallglot_api_rate_share") == pytest.approx(share), other
        assert budget.share == pytest.approx(share), other
