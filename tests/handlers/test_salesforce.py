"""The ``salesforce`` handler against a Salesforce fake served on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pytest
import pytest_asyncio

from handlers import salesforce
from receiver.delivery import (
    Delivery,
    HandlerContext,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from tests.fakes import Switchboard, serve
from tests.fakes.salesforce_fake import SalesforceFake

SESSION = "sess_01HXYZ123456789"
CUSTOMER = "+14155550100"
CALL: dict[str, Any] = {
    "call_id": "CA123",
    "ended_at": "2026-03-26T23:04:20-07:00",  # the next day in UTC
    "duration_seconds": 245.3,
    "direction": "inbound",
    "from": CUSTOMER,
    "to": "+14155550199",
}

# One server for the module (uvicorn's shutdown costs ~0.2 s); each test plugs in a fresh fake.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Rig:
    fake: SalesforceFake
    url: str
    context: HandlerContext
    make_document: Callable[..., dict[str, Any]]
    make_delivery: Callable[..., Delivery]
    built: list[salesforce.SalesforceHandler] = field(default_factory=list)

    def handler(self, **options: Any) -> salesforce.SalesforceHandler:
        settings = {
            "name": "sf",
            "type": "salesforce",
            "client_id": self.fake.client_id,
            "client_secret": self.fake.client_secret,
            "login_url": self.url,
            **options,
        }
        built = salesforce.build(salesforce.Options.model_validate(settings), self.context)
        self.built.append(built)
        return built

    def delivery(
        self, shape: str = "new", *, call: dict[str, Any] | None = None, **overrides: Any
    ) -> Delivery:
        document = self.make_document(shape, call=dict(CALL) if call is None else call)
        return self.make_delivery(document, **overrides)

    def only_task(self) -> dict[str, Any]:
        tasks = self.fake.tasks_for(SESSION)
        assert len(tasks) == 1, tasks
        return tasks[0]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[tuple[Switchboard, str]]:
    board = Switchboard()
    async with serve(board) as url:
        yield board, url


@pytest_asyncio.fixture(loop_scope="module")
async def rig(
    server: tuple[Switchboard, str],
    context: HandlerContext,
    make_document: Callable[..., dict[str, Any]],
    make_delivery: Callable[..., Delivery],
) -> AsyncIterator[Rig]:
    board, url = server
    fake = SalesforceFake()
    board.app = fake.app()
    rig = Rig(fake, url, context, make_document, make_delivery)
    yield rig
    for built in rig.built:
        await built.aclose()


# -- mapping --------------------------------------------------------------------------------------


async def test_task_carries_the_mapped_fields(rig: Rig) -> None:
    contact = rig.fake.add_contact(phone="(415) 555-0100")

    await rig.handler().deliver(rig.delivery())

    task = rig.only_task()
    assert task["Subject"] == f"Call analysis: inbound call from {CUSTOMER}"
    assert task["Status"] == "Completed"
    assert task["ActivityDate"] == "2026-03-27"
    assert task["CallDurationInSeconds"] == 245
    assert task["CallType"] == "Inbound"
    assert task["TaskSubtype"] == "Call"
    assert task["WhoId"] == contact
    assert task["Kallglot_Session_Id__c"] == SESSION
    description = task["Description"]
    assert "Customer checked order status; agent confirmed the new ship date." in description
    assert "- Agent: Calm and solution-oriented throughout." in description
    assert "Compliance: ok" in description
    assert "Score: 86%" in description
    assert f"Kallglot session {SESSION}, analysis anl_01HDEF456789012" in description


async def test_old_analysis_shape_is_rendered(rig: Rig) -> None:
    await rig.handler().deliver(rig.delivery("old"))

    description = rig.only_task()["Description"]
    assert "Order status checked; resolved." in description
    assert "- Label: positive" in description
    assert "Score: 85%" in description


async def test_failed_analysis_is_logged_with_its_reason(rig: Rig) -> None:
    await rig.handler().deliver(rig.delivery("failed"))

    task = rig.only_task()
    assert task["Subject"].startswith("Call analysis failed")
    assert "Analysis failed: Transcript was empty." in task["Description"]


async def test_outbound_call_without_duration_or_phone(rig: Rig) -> None:
    await rig.handler().deliver(rig.delivery(call={"direction": "outbound"}))

    task = rig.only_task()
    assert task["CallType"] == "Outbound"
    assert "CallDurationInSeconds" not in task
    assert "WhoId" not in task
    assert rig.fake.searches == []


# -- WhoId ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["salesforce_who_id", "crm_contact_id"])
async def test_who_id_from_metadata_wins_without_a_search(rig: Rig, key: str) -> None:
    given = rig.fake.add_lead(phone="+1 212 555 0000")
    rig.fake.add_contact(phone=CUSTOMER)

    await rig.handler().deliver(rig.delivery(call={**CALL, "metadata": {key: given}}))

    assert rig.only_task()["WhoId"] == given
    assert rig.fake.searches == []


async def test_crm_contact_id_of_another_crm_falls_back_to_the_phone(rig: Rig) -> None:
    contact = rig.fake.add_contact(phone=CUSTOMER)

    await rig.handler().deliver(rig.delivery(call={**CALL, "metadata": {"crm_contact_id": "123"}}))

    assert rig.only_task()["WhoId"] == contact


async def test_malformed_salesforce_who_id_is_permanent(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError, match="salesforce_who_id"):
        await rig.handler().deliver(rig.delivery(call={**CALL, "metadata": {"salesforce_who_id": "x' OR 1"}}))


@pytest.mark.parametrize(
    ("people", "expected"),
    [
        pytest.param([("lead", CUSTOMER), ("contact", CUSTOMER)], "contact", id="contact-before-lead"),
        pytest.param([("lead", "415-555-0100")], "lead", id="lead-when-no-contact"),
        pytest.param([("converted", CUSTOMER)], None, id="converted-lead-ignored"),
        pytest.param([("contact", "+1 212 555 0000")], None, id="other-number"),
        pytest.param([("mobile", "4155550100")], "mobile", id="mobile-phone"),
        pytest.param([("contact", CUSTOMER), ("contact2", CUSTOMER)], "contact", id="oldest-contact"),
    ],
)
async def test_who_id_found_by_phone(rig: Rig, people: list[tuple[str, str]], expected: str | None) -> None:
    ids = {}
    for kind, phone in people:
        if kind == "lead":
            ids[kind] = rig.fake.add_lead(phone=phone)
        elif kind == "converted":
            ids[kind] = rig.fake.add_lead(phone=phone, converted=True)
        elif kind == "mobile":
            ids[kind] = rig.fake.add_contact(mobile=phone)
        else:
            ids[kind] = rig.fake.add_contact(phone=phone)

    await rig.handler().deliver(rig.delivery())

    assert rig.only_task().get("WhoId") == (ids[expected] if expected else None)


async def test_phone_search_is_escaped_sosl(rig: Rig) -> None:
    await rig.handler().deliver(rig.delivery(call={**CALL, "from": "(415) 555-0100"}))

    (query,) = rig.fake.searches
    assert query.startswith("FIND {\\+14155550100 OR 4155550100} IN PHONE FIELDS RETURNING Contact(Id")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("+14155550100", "\\+14155550100"),
        ("a-b", "a\\-b"),
        ("x} RETURNING User(Id", "x\\} RETURNING User\\(Id"),
        ('it\'s "q"', 'it\\\'s \\"q\\"'),
        ("back\\slash", "back\\\\slash"),
        ("?&|!{}[]()^~*:", "\\?\\&\\|\\!\\{\\}\\[\\]\\(\\)\\^\\~\\*\\:"),
    ],
    ids=["plus", "minus", "brace-injection", "quotes", "backslash", "all-reserved"],
)
async def test_sosl_escape(raw: str, escaped: str) -> None:  # async only to share the module's mark
    assert salesforce.sosl_escape(raw) == escaped


# -- idempotency and tokens -----------------------------------------------------------------------


async def test_retry_and_replay_update_the_same_task(rig: Rig) -> None:
    handler = rig.handler()

    await handler.deliver(rig.delivery())
    await handler.deliver(rig.delivery())
    replay = rig.make_delivery(rig.make_document(call=dict(CALL), summary="Replayed summary."), attempt=5)
    await handler.deliver(replay)

    task = rig.only_task()
    assert len(rig.fake.tasks) == 1
    assert "Replayed summary." in task["Description"]
    assert task["TaskSubtype"] == "Call"


async def test_token_is_cached_across_deliveries(rig: Rig) -> None:
    handler = rig.handler()

    await handler.deliver(rig.delivery())
    await handler.deliver(rig.delivery())

    assert rig.fake.token_requests == 1


async def test_expired_token_is_refreshed_once(rig: Rig) -> None:
    handler = rig.handler()
    await handler.deliver(rig.delivery())
    rig.fake.expire_tokens()

    await handler.deliver(rig.delivery(attempt=2))

    assert rig.fake.token_requests == 2
    assert len(rig.fake.tasks) == 1


async def test_concurrent_deliveries_share_one_token_refresh(rig: Rig) -> None:
    handler = rig.handler()
    await handler.deliver(rig.delivery())
    rig.fake.expire_tokens()

    await asyncio.gather(*(handler.deliver(rig.delivery(attempt=n)) for n in (2, 3, 4)))

    assert rig.fake.token_requests == 2
    assert len(rig.fake.tasks) == 1


async def test_a_fresh_token_rejected_again_is_permanent(rig: Rig) -> None:
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    rig.fake.fail_next(401, expired, path="/services/data/")
    rig.fake.fail_next(401, expired, path="/services/data/")

    with pytest.raises(PermanentDeliveryError, match="freshly issued access token"):
        await rig.handler().deliver(rig.delivery(call={"direction": "inbound"}))

    assert rig.fake.token_requests == 2


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        pytest.param({"client_secret": "wrong-secret-value"}, "invalid_client", id="invalid_client"),
        pytest.param({"grant_enabled": False}, "invalid_grant", id="invalid_grant"),
    ],
)
async def test_token_errors_are_permanent_and_never_echo_the_secret(
    rig: Rig, setup: dict[str, Any], reason: str
) -> None:
    options = {}
    if "client_secret" in setup:
        options["client_secret"] = setup["client_secret"]
    else:
        rig.fake.grant_enabled = setup["grant_enabled"]

    with pytest.raises(PermanentDeliveryError) as caught:
        await rig.handler(**options).deliver(rig.delivery())

    assert reason in caught.value.reason
    assert "wrong-secret-value" not in caught.value.reason
    assert rig.fake.client_secret not in caught.value.reason


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, TransientDeliveryError), (503, TransientDeliveryError), (429, RateLimitedError)],
    ids=["500", "503", "429"],
)
async def test_token_endpoint_outages_are_retried(rig: Rig, status: int, error: type[Exception]) -> None:
    rig.fake.fail_next(status, {"error": "server_error"}, path="/oauth2/token")

    with pytest.raises(error):
        await rig.handler().deliver(rig.delivery())


# -- failures -------------------------------------------------------------------------------------


async def test_unknown_external_id_field_is_permanent_and_named(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await rig.handler(external_id_field="Missing_Field__c").deliver(rig.delivery())

    assert "the external id field Missing_Field__c does not exist on Task" in caught.value.reason


async def test_invalid_field_naming_the_external_id_field_is_permanent(rig: Rig) -> None:
    rig.fake.fail_next(
        400,
        [
            {
                "errorCode": "INVALID_FIELD",
                "message": "No such column 'Kallglot_Session_Id__c' on sobject of type Task",
            }
        ],
        path="/sobjects/Task/",
    )

    with pytest.raises(PermanentDeliveryError, match="does not exist on Task"):
        await rig.handler().deliver(rig.delivery())


def _sf(code: str, message: str = "fake") -> list[dict[str, str]]:
    return [{"errorCode": code, "message": message}]


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retry_after", "reason"),
    [
        pytest.param(503, _sf("SERVER_UNAVAILABLE"), {}, TransientDeliveryError, None, "503", id="503"),
        pytest.param(500, _sf("UNKNOWN_EXCEPTION"), {}, TransientDeliveryError, None, "500", id="500"),
        pytest.param(
            400, _sf("UNABLE_TO_LOCK_ROW"), {}, TransientDeliveryError, None, "UNABLE_TO_LOCK_ROW", id="lock"
        ),
        pytest.param(400, _sf("DUPLICATE_VALUE"), {}, TransientDeliveryError, None, "DUPLICATE", id="race"),
        pytest.param(
            403,
            _sf("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
            {},
            RateLimitedError,
            300.0,
            "REQUEST_LIMIT_EXCEEDED",
            id="daily-limit",
        ),
        pytest.param(
            503,
            _sf("REQUEST_LIMIT_EXCEEDED"),
            {"Retry_After": "20"},
            RateLimitedError,
            20.0,
            "LIMIT",
            id="503-limit",
        ),
        pytest.param(429, None, {"Retry_After": "7"}, RateLimitedError, 7.0, "429", id="429"),
        pytest.param(
            400,
            _sf("FIELD_CUSTOM_VALIDATION_EXCEPTION", "Subject is too loud"),
            {},
            PermanentDeliveryError,
            None,
            "Subject is too loud",
            id="validation-rule",
        ),
        pytest.param(
            403,
            _sf("INSUFFICIENT_ACCESS", "no access"),
            {},
            PermanentDeliveryError,
            None,
            "403",
            id="403-access",
        ),
    ],
)
async def test_error_classification(
    rig: Rig,
    status: int,
    body: Any,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
    reason: str,
) -> None:
    rig.fake.fail_next(status, body, path="/sobjects/Task/", **headers)

    with pytest.raises(error) as caught:
        await rig.handler().deliver(rig.delivery(call={"direction": "inbound"}))

    assert type(caught.value) is error
    assert reason in str(caught.value)
    assert getattr(caught.value, "retry_after", None) == retry_after


async def test_timeout_is_transient(rig: Rig) -> None:
    rig.fake.delay = 0.5

    with pytest.raises(TransientDeliveryError, match="timed out"):
        await rig.handler(timeout_seconds=0.05).deliver(rig.delivery())


async def test_unreachable_login_is_transient(rig: Rig) -> None:
    async with serve(SalesforceFake().app()) as closed_url:
        pass

    with pytest.raises(TransientDeliveryError, match="could not reach Salesforce"):
        await rig.handler(login_url=closed_url).deliver(rig.delivery())


# -- probe ----------------------------------------------------------------------------------------


async def test_probe_checks_the_external_id_field(rig: Rig) -> None:
    await rig.handler().probe()

    assert rig.fake.requests[-1] == ("GET", "/services/data/v61.0/sobjects/Task/describe")


async def test_probe_fails_when_the_external_id_field_is_missing(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError, match="Other__c does not exist on Task"):
        await rig.handler(external_id_field="Other__c").probe()


async def test_probe_fails_on_bad_credentials(rig: Rig) -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid_client"):
        await rig.handler(client_secret="nope").probe()


# -- options --------------------------------------------------------------------------------------

BASE = {"name": "sf", "type": "salesforce", "client_id": "3MVG9x", "client_secret": "s3cret"}


async def test_defaults() -> None:  # async only to share the module's asyncio mark
    options = salesforce.Options.model_validate(BASE)

    assert options.login_url == "https://login.salesforce.com"
    assert options.api_version == "v61.0"
    assert options.external_id_field == "Kallglot_Session_Id__c"
    assert options.default_region == "US"
    assert "s3cret" not in repr(options)


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": None},
        {"client_id": ""},
        {"client_secret": None},
        {"client_secret": " "},
        {"login_url": "login.salesforce.com"},
        {"api_version": "61.0"},
        {"api_version": "v61"},
        {"external_id_field": "Bad-Field"},
        {"external_id_field": "x/../y"},
        {"default_region": "ZZ"},
        {"timeout_seconds": -1},
        {"instance_url": "https://x.my.salesforce.com"},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
async def test_invalid_options_are_rejected(change: dict[str, Any]) -> None:
    settings = {k: v for k, v in {**BASE, **change}.items() if v is not None}

    with pytest.raises(pydantic.ValidationError):
        salesforce.Options.model_validate(settings)
