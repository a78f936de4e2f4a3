"""The ``hubspot`` handler against a HubSpot fake served on loopback."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
import pytest_asyncio

from handlers import hubspot
from receiver.delivery import (
    Delivery,
    HandlerContext,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from tests.fakes import Switchboard, serve
from tests.fakes.hubspot_fake import HubSpotFake

SESSION = "sess_01HXYZ123456789"
CUSTOMER = "+14155550100"
AGENT_LINE = "+14155550199"

NEW_ANALYSIS = {
    "id": "anl_01HDEF456789012",
    "object": "analysis",
    "session_id": SESSION,
    "status": "completed",
    "summary": "Customer checked order status; agent confirmed the new ship date.",
    "sentiment": {"customer": "Neutral, then satisfied.", "agent": "Calm throughout."},
    "compliance": {"status": "ok", "flags": []},
    "performance": {"score": 0.86},
    "error": None,
}
OLD_ANALYSIS = {
    "id": "ana_01HDEF456789012",
    "object": "analysis",
    "session_id": SESSION,
    "status": "complete",
    "results": {
        "sentiment": {"overall": 0.72, "label": "positive", "trend": "improving"},
        "summary": {"brief": "Order status resolved.", "key_points": ["ship date"], "outcome": "resolved"},
        "quality": {"score": 85},
    },
}
CALL = {
    "call_id": "CA123",
    "ended_at": "2026-03-26T11:04:20Z",
    "duration_seconds": 245.3,
    "direction": "inbound",
    "from": CUSTOMER,
    "to": AGENT_LINE,
    "agent": {"id": "u_1", "email": "agent@example.com"},
}


def delivery(
    *,
    call: dict[str, Any] | None = None,
    analysis: dict[str, Any] | None = None,
    attempt: int = 1,
    kind: str = "completed",
) -> Delivery:
    document: dict[str, Any] = {
        "type": f"call.analysis.{kind}",
        "id": "dlv_1",
        "session_id": SESSION,
        "call": copy.deepcopy(CALL if call is None else call),
        "analysis": copy.deepcopy(NEW_ANALYSIS if analysis is None else analysis),
    }
    return Delivery(
        id="dlv_1",
        handler="crm",
        session_id=SESSION,
        analysis_id="anl_01HDEF456789012",
        status="completed" if kind == "completed" else "failed",
        attempt=attempt,
        created_at=datetime(2026, 3, 26, 11, 10, 22, tzinfo=UTC),
        document=document,
    )


@dataclass
class Rig:
    fake: HubSpotFake
    url: str
    clock: Any  # conftest's VirtualClock: sleeps advance it and are recorded
    context: HandlerContext
    built: list[hubspot.HubSpotHandler] = field(default_factory=list)

    def handler(self, **options: Any) -> hubspot.HubSpotHandler:
        settings = {
            "name": "crm",
            "type": "hubspot",
            "token": self.fake.token,
            "api_url": self.url,
            **options,
        }
        built = hubspot.build(hubspot.Options.model_validate(settings), self.context)
        self.built.append(built)
        return built

    def only_call(self) -> dict[str, Any]:
        calls = self.fake.calls_for(SESSION)
        assert len(calls) == 1, calls
        return calls[0]


# One server for the module (uvicorn's shutdown costs ~0.2 s); each test plugs in a fresh fake.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[tuple[Switchboard, str]]:
    board = Switchboard()
    async with serve(board) as url:
        yield board, url


@pytest_asyncio.fixture(loop_scope="module")
async def rig(server: tuple[Switchboard, str], clock: Any, context: HandlerContext) -> AsyncIterator[Rig]:
    board, url = server
    fake = HubSpotFake()
    board.app = fake.app()
    rig = Rig(fake, url, clock, context)
    yield rig
    for built in rig.built:
        await built.aclose()


# -- mapping --------------------------------------------------------------------------------------


async def test_call_engagement_carries_the_mapped_properties(rig: Rig) -> None:
    contact = rig.fake.add_contact(phone=CUSTOMER)

    await rig.handler().deliver(delivery())

    props = rig.only_call()["properties"]
    assert props["hs_timestamp"] == str(int(datetime(2026, 3, 26, 11, 4, 20, tzinfo=UTC).timestamp() * 1000))
    assert props["hs_call_title"] == f"Call analysis: inbound call from {CUSTOMER}"
    assert props["hs_call_duration"] == "245300"
    assert props["hs_call_direction"] == "INBOUND"
    assert props["hs_call_status"] == "COMPLETED"
    assert props["hs_call_from_number"] == CUSTOMER
    assert props["hs_call_to_number"] == AGENT_LINE
    assert props["kallglot_session_id"] == SESSION
    body = props["hs_call_body"]
    assert "Customer checked order status; agent confirmed the new ship date." in body
    assert "Customer: Neutral, then satisfied." in body
    assert "Agent: Calm throughout." in body
    assert "<strong>Compliance</strong>: ok" in body
    assert "<strong>Score</strong>: 86%" in body
    assert rig.fake.contacts_of(rig.only_call()["id"]) == {contact}


async def test_old_analysis_shape_is_rendered(rig: Rig) -> None:
    await rig.handler().deliver(delivery(analysis=OLD_ANALYSIS))

    body = rig.only_call()["properties"]["hs_call_body"]
    assert "Order status resolved." in body
    assert "Label: positive" in body
    assert "<strong>Score</strong>: 85%" in body


async def test_call_body_escapes_html(rig: Rig) -> None:
    analysis = {
        **NEW_ANALYSIS,
        "summary": "<script>alert(1)</script> & co",
        "compliance": {"flags": ["<b>x</b>"]},
    }

    await rig.handler().deliver(delivery(analysis=analysis))

    body = rig.only_call()["properties"]["hs_call_body"]
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in body
    assert "<li>&lt;b&gt;x&lt;/b&gt;</li>" in body


async def test_failed_analysis_logs_the_failure_reason(rig: Rig) -> None:
    analysis = {"id": "anl_x", "status": "failed", "error": "transcript unavailable"}

    await rig.handler().deliver(delivery(analysis=analysis, kind="failed"))

    props = rig.only_call()["properties"]
    assert props["hs_call_title"].startswith("Call analysis failed")
    assert "transcript unavailable" in props["hs_call_body"]


async def test_narrowed_document_without_call_or_analysis_still_logs_a_call(rig: Rig) -> None:
    item = delivery()
    item.document.pop("call")
    item.document.pop("analysis")

    await rig.handler().deliver(item)

    props = rig.only_call()["properties"]
    assert props["hs_timestamp"] == str(int(item.created_at.timestamp() * 1000))
    assert "hs_call_direction" not in props
    assert rig.fake.associations == set()


# -- contact resolution ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata_key", ["hubspot_contact_id", "crm_contact_id"], ids=["hubspot_contact_id", "crm_contact_id"]
)
async def test_contact_id_from_metadata_is_used_without_a_search(rig: Rig, metadata_key: str) -> None:
    given = rig.fake.add_contact(email="a@example.com")
    rig.fake.add_contact(phone=CUSTOMER)

    await rig.handler().deliver(delivery(call={**CALL, "metadata": {metadata_key: given}}))

    assert rig.fake.contacts_of(rig.only_call()["id"]) == {given}
    assert ("POST", "/crm/v3/objects/contacts/search") not in rig.fake.requests


async def test_non_numeric_crm_contact_id_belongs_to_another_crm_and_phone_is_searched(rig: Rig) -> None:
    by_phone = rig.fake.add_contact(phone=CUSTOMER)

    await rig.handler().deliver(delivery(call={**CALL, "metadata": {"crm_contact_id": "003ABCDEF"}}))

    assert rig.fake.contacts_of(rig.only_call()["id"]) == {by_phone}


async def test_non_numeric_hubspot_contact_id_is_permanent(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError, match="hubspot_contact_id"):
        await rig.handler().deliver(delivery(call={**CALL, "metadata": {"hubspot_contact_id": "abc"}}))
    assert rig.fake.calls == {}


@pytest.mark.parametrize(
    ("raw", "region", "stored"),
    [
        ("(415) 555-0100", "US", "+14155550100"),
        ("415.555.0100", "US", "+14155550100"),
        ("+1 415 555 0100", "DE", "+14155550100"),
        ("030 1234567", "DE", "+49301234567"),
    ],
    ids=["us-national", "us-dotted", "international-ignores-region", "de-national"],
)
async def test_phone_is_normalised_to_e164_before_the_search(
    rig: Rig, raw: str, region: str, stored: str
) -> None:
    contact = rig.fake.add_contact(mobilephone=stored)

    await rig.handler(default_region=region).deliver(delivery(call={**CALL, "from": raw}))

    assert rig.fake.contacts_of(rig.only_call()["id"]) == {contact}
    assert rig.only_call()["properties"]["hs_call_from_number"] == stored


@pytest.mark.parametrize(
    ("policy", "calls", "contacts_created", "associated"),
    [("create", 1, 1, 1), ("unassociated", 1, 0, 0), ("skip", 0, 0, 0)],
    ids=["create", "unassociated", "skip"],
)
async def test_no_match_policy(
    rig: Rig, policy: str, calls: int, contacts_created: int, associated: int
) -> None:
    await rig.handler(no_match=policy).deliver(delivery())

    assert len(rig.fake.calls) == calls
    assert len(rig.fake.contacts) == contacts_created
    assert len(rig.fake.associations) == associated
    if contacts_created:
        (created,) = rig.fake.contacts.values()
        assert created["properties"]["phone"] == CUSTOMER


async def test_no_match_create_without_a_phone_leaves_the_call_unassociated(rig: Rig) -> None:
    await rig.handler(no_match="create").deliver(delivery(call={"direction": "inbound"}))

    assert len(rig.fake.calls) == 1
    assert rig.fake.contacts == {}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("all", {"older", "newer"}), ("first", {"older"}), ("skip", None)],
    ids=["all", "first", "skip"],
)
async def test_many_matches_policy(rig: Rig, policy: str, expected: set[str] | None) -> None:
    ids = {"older": rig.fake.add_contact(phone=CUSTOMER), "newer": rig.fake.add_contact(mobilephone=CUSTOMER)}

    await rig.handler(many_matches=policy).deliver(delivery())

    if expected is None:
        assert rig.fake.calls == {}
    else:
        assert rig.fake.contacts_of(rig.only_call()["id"]) == {ids[name] for name in expected}


# -- idempotency ----------------------------------------------------------------------------------


async def test_retry_and_replay_update_the_same_call(rig: Rig) -> None:
    contact = rig.fake.add_contact(phone=CUSTOMER)
    handler = rig.handler()

    await handler.deliver(delivery())
    await handler.deliver(delivery())
    await handler.deliver(delivery(attempt=4, analysis={**NEW_ANALYSIS, "summary": "Replayed summary."}))

    call = rig.only_call()
    assert len(rig.fake.calls) == 1
    assert "Replayed summary." in call["properties"]["hs_call_body"]
    assert rig.fake.associations == {(call["id"], contact)}


async def test_concurrent_attempts_converge_on_one_call(rig: Rig) -> None:
    rig.fake.add_contact(phone=CUSTOMER)
    handler = rig.handler()

    await asyncio.gather(handler.deliver(delivery()), handler.deliver(delivery(attempt=2)))

    assert len(rig.fake.calls) == 1
    assert len(rig.fake.associations) == 1


async def test_retry_with_no_match_create_reuses_the_contact_it_created(rig: Rig) -> None:
    rig.fake.index_new_contacts = False  # HubSpot's search index lags writes
    handler = rig.handler(no_match="create")

    await handler.deliver(delivery())
    await handler.deliver(delivery(attempt=2))

    assert len(rig.fake.calls) == 1
    assert len(rig.fake.contacts) == 1
    assert len(rig.fake.associations) == 1


async def test_no_match_create_survives_a_failed_association_without_a_second_contact(rig: Rig) -> None:
    """Issue 8 hole 11: create, then the association fails, then a retry created a second contact."""
    rig.fake.index_new_contacts = False  # the retry cannot find the first contact by phone either
    rig.fake.fail_next(503, path="/associations/default/contacts/")
    handler = rig.handler(no_match="create")

    for attempt in (1, 2, 3):
        try:
            await handler.deliver(delivery(attempt=attempt))
        except TransientDeliveryError:
            continue

    (contact,) = rig.fake.contacts
    assert rig.fake.associations == {(rig.only_call()["id"], contact)}


async def test_no_match_create_whose_answer_is_lost_is_not_repeated(rig: Rig) -> None:
    rig.fake.index_new_contacts = False
    rig.fake.fail_next(502, path="/crm/v3/objects/contacts", exact=True, after=True)
    handler = rig.handler(no_match="create")

    with pytest.raises(TransientDeliveryError, match="HubSpot answered 502"):
        await handler.deliver(delivery())
    assert len(rig.fake.contacts) == 1  # HubSpot did create it; only the answer was lost
    await handler.deliver(delivery(attempt=2))

    (contact,) = rig.fake.contacts
    assert rig.fake.contacts[contact]["properties"]["phone"] == CUSTOMER
    assert rig.fake.associations == {(rig.only_call()["id"], contact)}


async def test_a_failure_after_the_upsert_is_retried_without_a_second_call(rig: Rig) -> None:
    contact = rig.fake.add_contact(phone=CUSTOMER)
    rig.fake.fail_next(503, path="/associations/default/")
    handler = rig.handler()

    with pytest.raises(TransientDeliveryError):
        await handler.deliver(delivery())
    await handler.deliver(delivery(attempt=2))

    assert rig.fake.associations == {(rig.only_call()["id"], contact)}


# -- failures -------------------------------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after(rig: Rig) -> None:
    rig.fake.fail_next(
        429,
        {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "policyName": "TEN_SECONDLY_ROLLING",
        },
        Retry_After="3",
    )

    with pytest.raises(RateLimitedError) as caught:
        await rig.handler().deliver(delivery())

    assert caught.value.retry_after == 3.0
    assert "TEN_SECONDLY_ROLLING" in caught.value.reason


async def test_429_for_the_daily_limit_waits_an_hour(rig: Rig) -> None:
    rig.fake.fail_next(429, {"status": "error", "message": "daily limit", "policyName": "DAILY"})

    with pytest.raises(RateLimitedError) as caught:
        await rig.handler().deliver(delivery())

    assert caught.value.retry_after == 3600.0


async def test_429_without_retry_after_waits_the_rate_limit_interval(rig: Rig) -> None:
    rig.fake.fail_next(429, {"status": "error", "message": "limit"})

    with pytest.raises(RateLimitedError) as caught:
        await rig.handler().deliver(delivery())

    assert caught.value.retry_after == 10.0


SCOPES = "This app hasn't been granted all required scopes"
INVALID = "Property values were not valid"


@pytest.mark.parametrize(
    ("status", "body", "error", "reason"),
    [
        pytest.param(
            403,
            {"message": SCOPES, "category": "MISSING_SCOPES"},
            PermanentDeliveryError,
            f"HubSpot denied access (403): {SCOPES}",
            id="403-scopes",
        ),
        pytest.param(
            400,
            {"message": INVALID, "category": "VALIDATION_ERROR"},
            PermanentDeliveryError,
            f"HubSpot rejected the request (400 VALIDATION_ERROR): {INVALID}",
            id="400-validation",
        ),
        pytest.param(
            404, {"message": "nope"}, PermanentDeliveryError, "HubSpot rejected the request (404)", id="404"
        ),
        pytest.param(408, None, TransientDeliveryError, "HubSpot answered 408", id="408"),
        pytest.param(500, {"message": "internal"}, TransientDeliveryError, "HubSpot answered 500", id="500"),
        pytest.param(502, None, TransientDeliveryError, "HubSpot answered 502", id="502"),
        pytest.param(503, None, TransientDeliveryError, "HubSpot answered 503", id="503"),
        pytest.param(504, None, TransientDeliveryError, "HubSpot answered 504", id="504"),
    ],
)
async def test_error_classification(
    rig: Rig, status: int, body: Any, error: type[Exception], reason: str
) -> None:
    rig.fake.fail_next(status, body)

    with pytest.raises(error) as caught:
        await rig.handler().deliver(delivery())

    assert type(caught.value) is error
    assert str(caught.value).startswith(reason)


async def test_rejected_token_is_permanent_and_never_echoed(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await rig.handler(token="pat-na1-wrong-token-9999").deliver(delivery())

    assert caught.value.reason == "HubSpot rejected the token (401)"


async def test_a_message_echoing_the_token_is_sanitised(rig: Rig) -> None:
    rig.fake.fail_next(
        400, {"message": f"bad header Bearer {rig.fake.token}", "category": "VALIDATION_ERROR"}
    )

    with pytest.raises(PermanentDeliveryError) as caught:
        await rig.handler().deliver(delivery())

    assert rig.fake.token not in caught.value.reason
    assert "***" in caught.value.reason


async def test_id_property_that_is_not_unique_is_permanent_with_a_hint(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError, match="hasUniqueValue=true"):
        await rig.handler(id_property="kallglot_not_unique").deliver(delivery())


async def test_timeout_is_transient(rig: Rig) -> None:
    rig.fake.delay = 0.5

    with pytest.raises(TransientDeliveryError, match="timed out"):
        await rig.handler(timeout_seconds=0.05).deliver(delivery())


async def test_unreachable_hubspot_is_transient(rig: Rig) -> None:
    async with serve(HubSpotFake().app()) as closed_url:
        pass

    with pytest.raises(TransientDeliveryError, match="could not reach HubSpot"):
        await rig.handler(api_url=closed_url).deliver(delivery())


# -- pacing ---------------------------------------------------------------------------------------


async def test_burst_is_paced_to_the_request_rate(rig: Rig) -> None:
    handler = rig.handler(max_requests_per_second=2)

    for _ in range(3):
        await handler.deliver(delivery(call={"direction": "inbound"}))  # 1 request each: no phone, no search

    assert rig.clock.sleeps == [pytest.approx(0.5)]


async def test_exhausted_rate_limit_window_holds_the_next_request(rig: Rig) -> None:
    rig.fake.ratelimit_remaining = 0
    handler = rig.handler()

    await handler.deliver(delivery(call={"direction": "inbound"}))
    assert rig.clock.sleeps == []
    await handler.deliver(delivery(call={"direction": "inbound"}))

    assert rig.clock.sleeps == [pytest.approx(10.0)]


# -- probe ----------------------------------------------------------------------------------------


async def test_probe_succeeds_with_a_valid_token(rig: Rig) -> None:
    await rig.handler().probe()

    assert rig.fake.requests[-1] == ("GET", "/crm/v3/objects/contacts")


async def test_probe_fails_permanently_with_a_bad_token(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError, match=r"token \(401\)"):
        await rig.handler(token="pat-na1-bad").probe()


# -- options --------------------------------------------------------------------------------------

BASE = {"name": "crm", "type": "hubspot", "token": "pat-na1-x"}


async def test_defaults() -> None:  # async only to share the module's asyncio mark
    options = hubspot.Options.model_validate(BASE)

    assert options.api_url == "https://api.hubapi.com"
    assert options.no_match == "unassociated"
    assert options.many_matches == "all"
    assert options.id_property == "kallglot_session_id"
    assert options.default_region == "US"
    assert "pat-na1-x" not in repr(options)


@pytest.mark.parametrize(
    "change",
    [
        {"token": None},
        {"token": "  "},
        {"no_match": "ignore"},
        {"many_matches": "most"},
        {"api_url": "ftp://api.hubapi.com"},
        {"api_url": "not a url"},
        {"default_region": "XX"},
        {"id_property": "Has Spaces"},
        {"timeout_seconds": 0},
        {"max_requests_per_second": 0},
        {"type": "salesforce"},
        {"unknown_option": True},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
async def test_invalid_options_are_rejected(change: dict[str, Any]) -> None:
    settings = {**BASE, **change}
    settings = {k: v for k, v in settings.items() if v is not None}

    with pytest.raises(pydantic.ValidationError):
        hubspot.Options.model_validate(settings)


@pytest.mark.parametrize(
    ("field_name", "raw", "normalised"),
    [("api_url", "http://127.0.0.1:9/", "http://127.0.0.1:9"), ("default_region", "de", "DE")],
    ids=["api_url-trailing-slash", "region-lower-case"],
)
async def test_options_are_normalised(field_name: str, raw: str, normalised: str) -> None:
    options = hubspot.Options.model_validate({**BASE, field_name: raw})

    assert getattr(options, field_name) == normalised
