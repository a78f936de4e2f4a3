"""Generated inputs through a real receiver, on both stores, delivered by every built-in handler.

For any body a correctly signed sender can send (non-finite numbers, huge integers, lone surrogates,
NULs, deep nesting, odd dates, in values and keys, on both inbound endpoints) the answer is 2xx,
or 4xx with the JSON error body; never a 5xx (a 503 here would be a store refusing a row). Every
accepted call is then stored (both stores: ``database`` is parametrized) and delivered by all six
handlers against their fakes, and so is an ``analysis.complete`` whose result is generated junk.

Hypothesis runs in a worker thread while the servers run in the test's event loop; each example
crosses over with ``run_coroutine_threadsafe``. Logging is at DEBUG throughout, and every record is
formatted with the production JSON formatter (a log call must never break the work around it).
Counts are bounded for CI; ``HYPOTHESIS_PROFILE=long`` multiplies them for a soak.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.observability import JsonFormatter
from receiver.sandbox import DEV_API_KEY, DEV_WEBHOOK_SECRET
from receiver.signing import sign_kallglot, sign_standard_webhooks
from tests import hostile_json as hj
from tests.integration.conftest import StackFactory
from tests.integration.harness import ADMIN_TOKEN, INBOUND_SECRET, SINK_SECRET, Stack, wait_for
from tests.integration.test_fanout import Destinations, destinations, moto_endpoint  # noqa: F401

pytestmark = [
    pytest.mark.timeout(600 * hj.SCALE),
    # the drawn bodies are large on purpose (5,000 digits, 600 levels): their repr is not a problem
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
    # the servers use `random` (backoff jitter) in the event loop's thread while hypothesis draws
    # in its own: hypothesis sees the global state move and blames the strategy
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

ACCEPT_EXAMPLES = 60 * hj.SCALE
ANALYSIS_EXAMPLES = 6 * hj.SCALE
HANDLERS = {"archive", "files", "hubspot", "salesforce", "sink", "slack"}
T = TypeVar("T")


@dataclass
class Tally:
    """What the generated inputs got: the figures of the report, and the first failures."""

    tried: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    accepted_calls: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def record(self, what: str, body: bytes, response: httpx.Response) -> None:
        self.tried += 1
        self.statuses[response.status_code] += 1
        status = response.status_code
        if status >= 500 or status < 200 or 300 <= status < 400:
            self.problems.append(f"{what}: HTTP {status} {response.text[:200]} for {body[:300]!r}")
        elif status >= 400:
            error = _json(response).get("error")
            if not (isinstance(error, dict) and {"code", "message"} <= set(error)):
                self.problems.append(
                    f"{what}: HTTP {status} without the JSON error body: {response.text[:200]}"
                )

    def summary(self) -> str:
        fives = sum(n for status, n in self.statuses.items() if status >= 500)
        return f"tried={self.tried} statuses={dict(sorted(self.statuses.items()))} 5xx={fives}"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class Bridge:
    """Runs the servers' coroutines from hypothesis' worker thread, in the test's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __call__(self, make: Callable[[], Awaitable[T]]) -> T:
        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=60)


# --- what a signed sender sends ------------------------------------------------------------------

_optional = st.just(hj.Raw("__absent__"))


def _object(fields: dict[str, st.SearchStrategy[object]], fixed: dict[str, object]) -> st.SearchStrategy[str]:
    """A JSON object text with each of ``fields`` present or absent, junk keys, then ``fixed``."""

    def build(drawn: tuple[dict[str, object], dict[str, object]]) -> str:
        chosen, junk = drawn
        merged = {**junk, **{k: v for k, v in chosen.items() if v != hj.Raw("__absent__")}, **fixed}
        return hj.render(merged)

    return st.tuples(
        st.fixed_dictionaries({k: s | _optional for k, s in fields.items()}),
        st.dictionaries(hj.keys, hj.values(6), max_size=3),
    ).map(build)


def _call_ended_text(session_id: str) -> st.SearchStrategy[str]:
    short_text = st.text(max_size=20) | st.sampled_from(["\udc00", "+1415555\x000100", "+14155550100"])
    fields: dict[str, st.SearchStrategy[object]] = {
        "ended_at": hj.odd_dates | hj.leaves,
        "from": short_text | hj.leaves,
        "to": short_text,
        "direction": st.sampled_from(["inbound", "outbound", "sideways"]),
        "call_id": short_text | hj.leaves,
        "duration_seconds": st.floats(min_value=0, max_value=7 * 86400) | hj.leaves,
        "agent": st.dictionaries(hj.keys, hj.values(6), max_size=3) | hj.leaves,
        "metadata": st.dictionaries(hj.keys, hj.values(8), max_size=4) | hj.leaves,
    }
    return _object(fields, {"session_id": session_id})


def _kallglot_text(session_id: str) -> st.SearchStrategy[str]:
    data = _object(
        {
            "duration": st.floats(min_value=0, max_value=86400) | st.sampled_from([1e308, -1.0]) | hj.leaves,
            "object": st.just("session"),
            "ended_at": hj.odd_dates,
        },
        {"id": session_id},
    )
    kind = st.sampled_from(["session.ended", "session.ended", "transcript.ready", "session.started"])
    envelope = st.tuples(kind, data, st.dictionaries(hj.keys, hj.values(6), max_size=2))
    return envelope.map(
        lambda parts: hj.render(
            {**parts[2], "id": f"evt_{uuid.uuid4().hex}", "type": parts[0], "data": hj.Raw(parts[1])}
        )
    )


def _analysis_text(analysis_id: str, session_id: str) -> st.SearchStrategy[str]:
    junk = hj.values(10)
    parts = st.fixed_dictionaries(
        {"summary": junk | st.text(max_size=60)},
        optional={
            "sentiment": junk,
            "compliance": st.fixed_dictionaries({"status": hj.leaves, "flags": st.lists(junk, max_size=3)}),
            "keywords": st.lists(junk, max_size=4),
            "performance": st.fixed_dictionaries({"score": hj.leaves}),
            "results": junk,
        },
    )
    return parts.map(
        lambda result: hj.render(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": "analysis.completed",
                "data": {"id": analysis_id, "session_id": session_id, "status": "completed", **result},
            }
        )
    )


def _clean_analysis(analysis_id: str, session_id: str) -> bytes:
    data = {"id": analysis_id, "session_id": session_id, "status": "completed", "summary": "A clean result."}
    return json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "analysis.completed", "data": data}).encode()


# --- the suite -----------------------------------------------------------------------------------


async def _post_call_ended(stack: Stack, body: bytes) -> httpx.Response:
    headers = sign_standard_webhooks(INBOUND_SECRET, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
    return await stack.http.post(f"{stack.url}/events/call-ended", content=body, headers=headers)


async def _post_kallglot(stack: Stack, body: bytes) -> httpx.Response:
    headers = {"Kallglot-Signature": sign_kallglot(DEV_WEBHOOK_SECRET, int(time.time()), body)}
    return await stack.http.post(f"{stack.url}/webhooks/kallglot", content=body, headers=headers)


def _run_acceptance(bridge: Bridge, stack: Stack, tally: Tally) -> None:
    counter = iter(range(10**9))

    @settings(
        max_examples=ACCEPT_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        session_id = f"sess_gen_{next(counter)}_{uuid.uuid4().hex[:8]}"
        which = data.draw(st.sampled_from(["call-ended", "kallglot", "any-json", "any-bytes"]))
        if which == "call-ended":
            body = hj.encode(data.draw(_call_ended_text(session_id)))
        elif which == "kallglot":
            body = hj.encode(data.draw(_kallglot_text(session_id)))
        elif which == "any-json":
            body = hj.encode(data.draw(hj.json_text()))
        else:
            body = data.draw(st.binary(max_size=200))
        endpoint = (
            which
            if which in ("call-ended", "kallglot")
            else data.draw(st.sampled_from(["call-ended", "kallglot"]))
        )
        post = _post_call_ended if endpoint == "call-ended" else _post_kallglot
        response = bridge(lambda: post(stack, body))
        tally.record(which, body, response)
        if _json(response).get("status") == "accepted" and which in ("call-ended", "kallglot"):
            tally.accepted_calls.append(session_id)

    one()


def _run_analyses(bridge: Bridge, stack: Stack, tally: Tally) -> None:
    counter = iter(range(10**9))

    @settings(
        max_examples=ANALYSIS_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        session_id = f"sess_junk_{next(counter)}_{uuid.uuid4().hex[:8]}"
        response = bridge(
            lambda: stack.call_ended(session_id, direction="inbound", **{"from": "+14155550100"})
        )
        assert response.status_code == 200, response.text

        async def analysis_id() -> str | None:
            view = await stack.call(session_id)
            return view.get("analysis_id") if view else None

        found: str = bridge(lambda: wait_for(analysis_id, timeout=20, what=f"{session_id}'s analysis id"))
        body = hj.encode(data.draw(_analysis_text(found, session_id)))
        answer = bridge(lambda: _post_kallglot(stack, body))
        tally.record("analysis", body, answer)
        if answer.status_code != 200:
            # refused at the door, as it may be: a clean result completes the call instead
            clean = _clean_analysis(found, session_id)
            assert bridge(lambda: _post_kallglot(stack, clean)).status_code == 200
        tally.accepted_calls.append(session_id)

    one()


async def _undelivered(stack: Stack, session_ids: list[str]) -> dict[str, Any]:
    """Calls not yet delivered to all six handlers, with their state and delivery states."""
    left: dict[str, Any] = {}
    for session_id in session_ids:
        view = await stack.call(session_id)
        if view is None:
            left[session_id] = "not stored"
            continue
        states = {d["handler"]: d["state"] for d in view["deliveries"]}
        if view["state"] != "delivered" or states != dict.fromkeys(HANDLERS, "delivered"):
            errors = {d["handler"]: d.get("last_error") for d in view["deliveries"] if d.get("last_error")}
            left[session_id] = {"state": view["state"], "deliveries": states, "errors": errors}
    return left


async def test_generated_inputs_never_get_a_5xx_and_every_accepted_call_is_stored_and_delivered(
    make_stack: StackFactory,
    destinations: Destinations,  # noqa: F811 (the fan-out fixture, reused)
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for chatty in ("httpcore", "hpack", "botocore", "aiobotocore", "urllib3", "asyncio"):
        caplog.set_level(logging.INFO, logger=chatty)
    await destinations.create_bucket()
    for phone in ("+14155550100",):
        destinations.add_customer(phone)
    stack = await make_stack(handlers=destinations.handlers(enrich=True), log_level="DEBUG")
    bridge = Bridge(asyncio.get_running_loop())
    tally = Tally()

    await asyncio.to_thread(_run_acceptance, bridge, stack, tally)
    assert not tally.problems, "\n".join(tally.problems[:5])
    assert tally.accepted_calls, "no generated event was accepted: the generators drifted"

    # Now only generated results complete calls: the sandbox answers "processing" for an hour.
    await _wait_all_delivered(stack, tally.accepted_calls)
    stack.sandbox.update_config({"analysis_latency_seconds": 3600})
    analysed_from = len(tally.accepted_calls)
    await asyncio.to_thread(_run_analyses, bridge, stack, tally)
    assert not tally.problems, "\n".join(tally.problems[:5])
    stack.sandbox.update_config({"analysis_latency_seconds": 0.05})

    await _wait_all_delivered(stack, tally.accepted_calls)

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    for secret in (DEV_WEBHOOK_SECRET, DEV_API_KEY, INBOUND_SECRET, SINK_SECRET, ADMIN_TOKEN):
        assert not any(secret in line for line in lines), "a secret reached the logs"
    print(  # the figures of the report (run with -s to see them)
        f"\ngenerated-inputs store={database.split(':')[0]} {tally.summary()} "
        f"accepted_calls={analysed_from} generated_analyses={len(tally.accepted_calls) - analysed_from} "
        f"delivered_everywhere={len(tally.accepted_calls)} refused_by_backend=0 log_records={len(lines)}"
    )


async def _wait_all_delivered(stack: Stack, session_ids: list[str], timeout: float = 60 * hj.SCALE) -> None:
    async def nothing_left() -> bool:
        return not await _undelivered(stack, session_ids)

    try:
        await wait_for(nothing_left, timeout=timeout, what="every accepted call to be delivered everywhere")
    except AssertionError:
        left = await _undelivered(stack, session_ids)
        raise AssertionError(f"{len(left)} undelivered: {json.dumps(left, default=str)[:3000]}") from None
