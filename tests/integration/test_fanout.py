"""One ended call fans out through the real pipeline to every handler type at once.

The receiver and the sandbox run as in ``conftest.make_stack``; every destination is a real server on
loopback: the Slack, HubSpot and Salesforce fakes, moto for S3, the harness ``Sink`` for the webhook,
and a directory for the file handler. Everything async lives in the test's own (function) event loop,
so the fakes are started per test next to the stack rather than shared per module; moto runs in a
thread of its own and is shared by the module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from handlers import _analysis
from handlers._slack_blocks import escape
from receiver.sandbox import DEV_API_KEY
from tests.fakes import serve
from tests.fakes.debug_logs import debug_logs  # noqa: F401  (autouse: the whole fan-out logs at DEBUG)
from tests.fakes.hubspot_fake import HubSpotFake
from tests.fakes.salesforce_fake import SalesforceFake
from tests.fakes.slack_fake import TOKEN as SLACK_TOKEN
from tests.fakes.slack_fake import SlackFake
from tests.integration.conftest import StackFactory
from tests.integration.harness import (
    ADMIN_TOKEN,
    SINK_SECRET,
    Sink,
    Stack,
    metric_value,
    start_server,
    stop_server,
    wait_for,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAST_RETRY = {"initial_seconds": 0.05, "max_seconds": 0.2, "horizon_seconds": 300}
CUSTOMER = "+14155550100"
TELEPHONY_CALL: dict[str, Any] = {
    "call_id": "CA_fanout",
    "direction": "inbound",
    "from": CUSTOMER,
    "to": "+14155550199",
    "duration_seconds": 245.3,
    "metadata": {"team": "support"},
}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server for this module, with fake credentials where the S3 handler looks for them."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@dataclass
class Destinations:
    """Every destination of the fan-out, and the handlers list that points at them."""

    slack: SlackFake
    hubspot: HubSpotFake
    salesforce: SalesforceFake
    sink: Sink
    s3: Any
    bucket: str
    urls: dict[str, str]
    files: Path

    def handlers(self, *, enrich: bool = False) -> list[dict[str, Any]]:
        common: dict[str, Any] = {"retry": FAST_RETRY, "enrich": enrich}
        return [
            {"name": "files", "type": "file", "path": f"{self.files}/", **common},
            {
                "name": "sink",
                "type": "webhook",
                "url": f"{self.urls['sink']}/hook",
                "secret": SINK_SECRET,
                **common,
            },
            {
                "name": "slack",
                "type": "slack",
                "token": SLACK_TOKEN,
                "channel": "C0CALLS",
                "api_url": f"{self.urls['slack']}/api/",
                **common,
            },
            {
                "name": "hubspot",
                "type": "hubspot",
                "token": self.hubspot.token,
                "api_url": self.urls["hubspot"],
                **common,
            },
            {
                "name": "salesforce",
                "type": "salesforce",
                "client_id": self.salesforce.client_id,
                "client_secret": self.salesforce.client_secret,
                "login_url": self.urls["salesforce"],
                **common,
            },
            {
                "name": "archive",
                "type": "s3",
                "bucket": self.bucket,
                "endpoint_url": self.urls["s3"],
                "region": "us-east-1",
                **common,
            },
        ]

    def add_customer(self, phone: str) -> tuple[str, str]:
        """The same person in both CRMs: ``(HubSpot contact id, Salesforce contact id)``."""
        return self.hubspot.add_contact(phone=phone), self.salesforce.add_contact(phone=phone)

    async def create_bucket(self) -> None:
        await self.s3.create_bucket(Bucket=self.bucket)

    async def objects(self, session_id: str) -> dict[str, dict[str, Any]]:
        listing = await self.s3.list_objects_v2(Bucket=self.bucket, Prefix="analyses/")
        found = {}
        for item in listing.get("Contents", []):
            if f"/{session_id}/" in item["Key"]:
                body = await (await self.s3.get_object(Bucket=self.bucket, Key=item["Key"]))["Body"].read()
                found[item["Key"]] = json.loads(body)
        return found

    def slack_posts(self, session_id: str) -> list[dict[str, Any]]:
        return [
            r.body
            for r in self.slack.received
            if r.path == "chat.postMessage" and session_id in json.dumps(r.body.get("blocks"))
        ]


@pytest.fixture
async def destinations(moto_endpoint: str, tmp_path: Path) -> AsyncIterator[Destinations]:
    async with AsyncExitStack() as exits:
        slack, hubspot, salesforce, sink = SlackFake(), HubSpotFake(), SalesforceFake(), Sink()
        urls = {"s3": moto_endpoint}
        urls["slack"] = await exits.enter_async_context(serve(slack.app))
        urls["hubspot"] = await exits.enter_async_context(serve(hubspot.app()))
        urls["salesforce"] = await exits.enter_async_context(serve(salesforce.app()))
        sink_server, urls["sink"] = await start_server(sink.app())
        exits.push_async_callback(stop_server, sink_server)
        s3 = await exits.enter_async_context(
            get_session().create_client("s3", region_name="us-east-1", endpoint_url=moto_endpoint)
        )
        bucket = f"fanout-{tmp_path.name.lower().replace('_', '-')[-40:]}".rstrip("-")
        # make_stack's file handler convention: stack.delivered_files() reads this directory
        yield Destinations(slack, hubspot, salesforce, sink, s3, bucket, urls, tmp_path / "deliveries")


async def _s3_key(stack: Stack, session_id: str) -> tuple[str, str]:
    """The deterministic key the archive handler writes (default template), and its delivery id."""
    view = await stack.call(session_id)
    assert view is not None
    [archive] = [d for d in view["deliveries"] if d["handler"] == "archive"]
    day = archive["created_at"][:10]
    return f"analyses/{day}/{session_id}/{view['analysis_id']}.json", archive["id"]


async def _assert_one_record_everywhere(
    stack: Stack, dest: Destinations, session_id: str, contacts: tuple[str, str]
) -> None:
    [doc] = [d for d in stack.delivered_files() if d["session_id"] == session_id]
    summary = _analysis.summary(doc["analysis"])
    assert summary

    [sent] = [d for d in dest.sink.received if d["session_id"] == session_id]
    assert {**sent, "id": None} == {**doc, "id": None}

    [post] = dest.slack_posts(session_id)
    assert post["channel"] == "C0CALLS"
    assert escape(summary) in post["text"]

    [engagement] = dest.hubspot.calls_for(session_id)
    assert engagement["properties"]["kallglot_session_id"] == session_id
    assert dest.hubspot.contacts_of(engagement["id"]) == {contacts[0]}

    [task] = dest.salesforce.tasks_for(session_id)
    assert task["Status"] == "Completed"
    assert task["WhoId"] == contacts[1]

    key, delivery_id = await _s3_key(stack, session_id)
    objects = await dest.objects(session_id)
    assert list(objects) == [key]
    assert objects[key]["id"] == delivery_id
    assert {**objects[key], "id": None} == {**doc, "id": None}
    assert stack.charged(session_id) == 1


async def _customer_of(stack: Stack, session_id: str) -> str:
    """The phone number Kallglot (the sandbox) knows for the session, as enrichment reads it."""
    response = await stack.http.get(
        f"{stack.sandbox_url}/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {DEV_API_KEY}"}
    )
    phone: str = response.json()["phone_number"]
    return phone


async def test_a_telephony_call_and_an_enriched_kallglot_call_reach_every_handler_exactly_once(
    make_stack: StackFactory, destinations: Destinations
) -> None:
    await destinations.create_bucket()
    stack = await make_stack(handlers=destinations.handlers(enrich=True))
    enriched = await _customer_of(stack, "sess_fanout_kg")
    contacts = {
        "sess_fanout_tel": destinations.add_customer(CUSTOMER),
        "sess_fanout_kg": destinations.add_customer(enriched),
    }

    assert (await stack.call_ended("sess_fanout_tel", **TELEPHONY_CALL)).status_code == 200
    assert (await stack.session_ended("sess_fanout_kg")).status_code == 200
    telephony = await stack.wait_state("sess_fanout_tel", "delivered", timeout=20)
    kallglot = await stack.wait_state("sess_fanout_kg", "delivered", timeout=20)

    for view in (telephony, kallglot):
        assert {d["handler"]: d["state"] for d in view["deliveries"]} == dict.fromkeys(
            ("archive", "files", "hubspot", "salesforce", "sink", "slack"), "delivered"
        )
    [tel_doc] = [d for d in stack.delivered_files() if d["session_id"] == "sess_fanout_tel"]
    assert tel_doc["call"]["from"] == CUSTOMER
    assert tel_doc["call"]["metadata"] == {"team": "support"}
    [kg_doc] = [d for d in stack.delivered_files() if d["session_id"] == "sess_fanout_kg"]
    assert kg_doc["call"]["phone_number"] == enriched
    for session_id, pair in contacts.items():
        await _assert_one_record_everywhere(stack, destinations, session_id, pair)
    assert len(stack.delivered_files()) == len(destinations.sink.received) == 2
    assert stack.stats()["analysis_posts"] == 2


async def _dead_letters(stack: Stack) -> dict[str, str]:
    listing = await stack.http.get(f"{stack.admin_url}/admin/dead-letters", headers=ADMIN)
    return {d["handler"]: d["last_error"] for d in listing.json()["dead_letters"]}


async def _wait_dead_letters(stack: Stack, count: int) -> dict[str, str]:
    async def enough() -> dict[str, str] | None:
        found = await _dead_letters(stack)
        return found if len(found) >= count else None

    found: dict[str, str] = await wait_for(enough, timeout=20, what=f"{count} dead letters")
    return found


async def test_replaying_every_dead_letter_redelivers_without_a_second_record_or_analysis(
    make_stack: StackFactory, destinations: Destinations
) -> None:
    dest = destinations  # the bucket is missing: S3 fails permanently until it is created
    contacts = dest.add_customer(CUSTOMER)
    dest.sink.fail_with = 400
    # HubSpot writes the call, then refuses the association: a dead letter after a real write
    dest.hubspot.fail_next(404, {"status": "error", "message": "gone"}, path="/associations/default/")
    dest.salesforce.fail_next(
        400, [{"errorCode": "INVALID_TYPE", "message": "no"}], path="/sobjects/Task/Kallglot"
    )
    stack = await make_stack(handlers=dest.handlers())

    await stack.call_ended("sess_fanout_replay", **TELEPHONY_CALL)
    dead = await _wait_dead_letters(stack, 4)
    assert set(dead) == {"archive", "hubspot", "salesforce", "sink"}
    [engagement] = dest.hubspot.calls_for("sess_fanout_replay")
    assert dest.hubspot.contacts_of(engagement["id"]) == set()
    assert dest.salesforce.tasks_for("sess_fanout_replay") == []

    dest.sink.fail_with = None
    await dest.create_bucket()
    replay = await stack.http.post(f"{stack.admin_url}/admin/dead-letters/replay", json={}, headers=ADMIN)

    assert replay.json() == {"replayed": 4}
    await stack.wait_state("sess_fanout_replay", "delivered", timeout=20)
    await _assert_one_record_everywhere(stack, dest, "sess_fanout_replay", contacts)
    assert [c["id"] for c in dest.hubspot.calls_for("sess_fanout_replay")] == [engagement["id"]]
    assert stack.stats()["analysis_posts"] == 1
    assert await _dead_letters(stack) == {}


async def test_a_destination_that_keeps_failing_opens_its_circuit_until_it_recovers(
    make_stack: StackFactory, destinations: Destinations
) -> None:
    await destinations.create_bucket()
    handlers = destinations.handlers()
    sink = next(h for h in handlers if h["name"] == "sink")
    sink["circuit"] = {"failure_threshold": 3, "open_seconds": 0.3}
    destinations.sink.fail_with = 503
    stack = await make_stack(handlers=handlers)

    await stack.call_ended("sess_fanout_circuit", **TELEPHONY_CALL)

    async def circuit(state: float) -> bool:
        return metric_value(await stack.metrics(), "receiver_handler_circuit_open", handler="sink") == state

    await wait_for(lambda: circuit(1), timeout=20, what="the sink's circuit to open")
    attempts = destinations.sink.attempts
    assert attempts >= 3
    view = await stack.call("sess_fanout_circuit")
    assert view is not None
    assert view["state"] == "completed"
    states = {d["handler"]: d["state"] for d in view["deliveries"]}
    assert states.pop("sink") == "pending"
    await wait_for(lambda: _all_delivered(stack, set(states)), timeout=20, what="the other handlers")
    assert await _dead_letters(stack) == {}
    still = await stack.call("sess_fanout_circuit")
    assert still is not None
    assert [d["state"] for d in still["deliveries"] if d["handler"] == "sink"] == ["pending"]
    text = await stack.metrics()
    assert metric_value(text, "receiver_deliveries_total", handler="sink", outcome="dead_lettered") == 0
    assert metric_value(text, "receiver_handler_circuit_open", handler="files") == 0

    destinations.sink.fail_with = None
    await stack.wait_state("sess_fanout_circuit", "delivered", timeout=20)
    await wait_for(lambda: circuit(0), timeout=5, what="the sink's circuit to close")
    assert destinations.sink.ids() == ["sess_fanout_circuit"]
    assert stack.charged("sess_fanout_circuit") == 1


async def _all_delivered(stack: Stack, handlers: set[str]) -> bool:
    view = await stack.call("sess_fanout_circuit")
    return view is not None and all(
        d["state"] == "delivered" for d in view["deliveries"] if d["handler"] in handlers
    )
