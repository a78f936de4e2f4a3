"""HubSpot: log each analysed call as a Call engagement associated with the customer's contact.

One delivery is one attempt, in this order (each step idempotent, so a retry or a replay converges
on the same records):

1. resolve the contact: an id from ``call.metadata`` (``hubspot_contact_id``, or a numeric
   ``crm_contact_id``), else a contact search on ``phone``/``mobilephone`` with the E.164 number,
   then the ``no_match`` / ``many_matches`` policy (``skip`` succeeds without writing anything);
2. upsert the call through ``POST /crm/v3/objects/calls/batch/upsert`` keyed on the unique
   ``id_property`` (default ``kallglot_session_id``) holding the session id. HubSpot resolves the
   unique value at write time, so two attempts can never create two calls; "search, then create"
   would, because the search index lags writes by seconds;
3. ``no_match: create``: reuse a contact an earlier attempt already associated with this call,
   else create one with the phone number **and its association to the call in the same request**
   (``associations`` in ``POST /crm/v3/objects/contacts``). A contact is therefore never created
   without being reachable from the call: an attempt that fails or loses the answer after the
   create is followed by one that finds the contact on the call instead of creating a second;
4. ``PUT /crm/v4/objects/calls/{id}/associations/default/contacts/{contact}`` (idempotent).

Failures: 429 -> RateLimitedError (``Retry-After``, else the rate-limit interval header);
401/403 and 4xx validation errors -> PermanentDeliveryError with HubSpot's message (sanitised);
408, 5xx, timeouts, connection errors -> TransientDeliveryError.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from handlers import _analysis, _http, _phone
from handlers._hubspot_pacing import DEFAULT_RETRY_AFTER, Pacer
from handlers._options import http_url, not_blank
from receiver.delivery import (
    Delivery,
    DeliveryError,
    HandlerContext,
    HandlerOptions,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)

logger = logging.getLogger(__name__)

_MAX_ASSOCIATED = 10  # contacts associated under ``many_matches: all``; also the search page size
_MAX_BODY_CHARS = 60_000  # hs_call_body holds 65,536 characters
_DAILY_RETRY_AFTER = 3600.0
_CONTACT_TO_CALL = 193  # HubSpot-defined association type "contact to call" (194 is call to contact)


class Options(HandlerOptions):
    """``type: hubspot`` (CONTRACT §3)."""

    type: Literal["hubspot"]
    token: SecretStr = Field(description="private-app access token (pat-…)")
    api_url: str = "https://api.hubapi.com"
    no_match: Literal["create", "unassociated", "skip"] = "unassociated"
    many_matches: Literal["all", "first", "skip"] = "all"
    id_property: str = Field(
        default="kallglot_session_id",
        pattern=r"^[a-z][a-z0-9_]{0,99}$",
        description="call property with hasUniqueValue=true that holds the session id",
    )
    default_region: _phone.Region = "US"
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_requests_per_second: float = Field(default=9.0, gt=0, le=100)

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        return not_blank(value, "token")

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "api_url")


def build(options: Options, context: HandlerContext) -> HubSpotHandler:
    return HubSpotHandler(options, context)


class HubSpotHandler:
    """The ``hubspot`` destination; owns one HTTP client."""

    def __init__(self, options: Options, context: HandlerContext) -> None:
        self.name = options.name
        self._options = options
        self._token = options.token.get_secret_value()
        self._pacer = Pacer(options.max_requests_per_second, context)
        self._client = httpx.AsyncClient(
            base_url=options.api_url,
            timeout=httpx.Timeout(options.timeout_seconds),
            headers={
                "Authorization": f"Bearer {self._token}",
                "User-Agent": context.user_agent,
                "Accept": "application/json",
            },
        )

    async def deliver(self, delivery: Delivery) -> None:
        document = delivery.document
        call = _http.mapping(document.get("call"))
        phone = _phone.e164(_analysis.customer_phone(call), self._options.default_region)
        contacts = await self._resolve_contacts(call, phone)
        if contacts is None:
            logger.info(
                "hubspot.skipped",
                extra={"handler": self.name, "session_id": delivery.session_id, "delivery_id": delivery.id},
            )
            return
        contact_ids, create_contact = contacts
        call_id, created = await self._upsert_call(delivery.session_id, self._properties(delivery))
        if create_contact and phone:
            existing = [] if created else await self._associated_contacts(call_id)
            if not existing:
                # Created together with its association in one request: no attempt can leave a
                # contact behind that the next attempt does not find on the call (issue 8 hole 11).
                await self._create_contact(phone, call_id)
                return
            contact_ids = existing[:1]
        for contact_id in contact_ids:
            await self._request(
                "PUT", f"/crm/v4/objects/calls/{call_id}/associations/default/contacts/{contact_id}"
            )

    async def probe(self) -> None:
        await self._request("GET", "/crm/v3/objects/contacts", params={"limit": "1"})

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- contacts ---------------------------------------------------------------------------------

    async def _resolve_contacts(
        self, call: Mapping[str, Any], phone: str | None
    ) -> tuple[list[str], bool] | None:
        """``(contact ids, create one)``, or ``None`` to skip the delivery."""
        metadata = _http.mapping(call.get("metadata"))
        given = _http.text(metadata.get("hubspot_contact_id"))
        if given is not None:
            if not given.isdigit():
                raise PermanentDeliveryError(
                    f"metadata hubspot_contact_id {given[:40]!r} is not a HubSpot id"
                )
            return [given], False
        generic = _http.text(metadata.get("crm_contact_id"))
        if generic is not None and generic.isdigit():  # a non-numeric id belongs to another CRM
            return [generic], False
        found = await self._search_contacts(phone) if phone else []
        if not found:
            policy = self._options.no_match
            if policy == "skip":
                return None
            return [], policy == "create"
        if len(found) > 1:
            policy_many = self._options.many_matches
            if policy_many == "skip":
                return None
            if policy_many == "first":
                return found[:1], False
        return found, False

    async def _search_contacts(self, phone: str) -> list[str]:
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": prop, "operator": "EQ", "value": phone}]}
                for prop in ("phone", "mobilephone")
            ],
            "properties": ["phone", "mobilephone"],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": _MAX_ASSOCIATED,
        }
        data = _http.json_object(await self._request("POST", "/crm/v3/objects/contacts/search", json=body))
        return [str(item["id"]) for item in _results(data) if item.get("id") is not None]

    async def _associated_contacts(self, call_id: str) -> list[str]:
        data = _http.json_object(
            await self._request("GET", f"/crm/v4/objects/calls/{call_id}/associations/contacts")
        )
        return [str(item["toObjectId"]) for item in _results(data) if item.get("toObjectId") is not None]

    async def _create_contact(self, phone: str, call_id: str) -> str:
        body = {
            "properties": {"phone": phone},
            "associations": [
                {
                    "to": {"id": call_id},
                    "types": [
                        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": _CONTACT_TO_CALL}
                    ],
                }
            ],
        }
        data = _http.json_object(await self._request("POST", "/crm/v3/objects/contacts", json=body))
        if data.get("id") is None:
            raise TransientDeliveryError("HubSpot created a contact but returned no id")
        return str(data["id"])

    # -- the call ---------------------------------------------------------------------------------

    async def _upsert_call(self, session_id: str, properties: dict[str, str]) -> tuple[str, bool]:
        id_property = self._options.id_property
        body = {"inputs": [{"idProperty": id_property, "id": session_id, "properties": properties}]}
        response = await self._request("POST", "/crm/v3/objects/calls/batch/upsert", json=body)
        data = _http.json_object(response)
        errors = data.get("errors")
        if response.status_code == 207 or (isinstance(errors, list) and errors):
            first = _http.mapping(errors[0]) if isinstance(errors, list) and errors else {}
            raise PermanentDeliveryError(
                self._hint(
                    f"HubSpot rejected the call: {sanitise(str(first.get('message', '')), self._token)}"
                )
            )
        results = _results(data)
        if not results or results[0].get("id") is None:
            raise TransientDeliveryError("HubSpot accepted the call upsert but returned no record")
        return str(results[0]["id"]), bool(results[0].get("new", False))

    def _properties(self, delivery: Delivery) -> dict[str, str]:
        document = delivery.document
        call = _http.mapping(document.get("call"))
        region = self._options.default_region
        props: dict[str, str] = {
            "hs_timestamp": str(int(_analysis.ended_at(call, delivery.created_at).timestamp() * 1000)),
            "hs_call_title": _analysis.title(document)[:255],
            "hs_call_body": render_body(delivery)[:_MAX_BODY_CHARS],
            "hs_call_status": "COMPLETED",
            self._options.id_property: delivery.session_id,
        }
        seconds = _analysis.duration_seconds(call)
        if seconds is not None:
            props["hs_call_duration"] = str(round(seconds * 1000))
        direction = _analysis.direction(call)
        if direction:
            props["hs_call_direction"] = direction.upper()
        for key, prop in (("from", "hs_call_from_number"), ("to", "hs_call_to_number")):
            raw = _http.text(call.get(key))
            if raw:
                props[prop] = _phone.e164(raw, region) or raw
        return props

    # -- HTTP -------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        await self._pacer.acquire()
        response = await _http.send(self._client, method, path, who="HubSpot", json=json, params=params)
        self._pacer.observe(response.headers)
        if response.is_success:
            return response
        raise self._hint_error(classify(response, self._token, self._pacer.now()))

    def _hint(self, reason: str) -> str:
        if self._options.id_property in reason:
            return (
                f"{reason} (the call property {self._options.id_property!r} must exist "
                "with hasUniqueValue=true)"
            )
        return reason

    def _hint_error(self, error: DeliveryError) -> DeliveryError:
        if isinstance(error, PermanentDeliveryError):
            return PermanentDeliveryError(self._hint(error.reason))
        return error


# -- pure helpers (tested through the handler) -----------------------------------------------------


def classify(response: httpx.Response, secret: str, now: float) -> DeliveryError:
    """Turn a non-2xx HubSpot answer into exactly one error of our tree."""
    status = response.status_code
    data = _http.json_object(response)
    message = sanitise(str(data.get("message") or response.reason_phrase or ""), secret)
    category = _http.text(data.get("category"))
    kind = _http.verdict(status)
    if kind is _http.Verdict.RATE_LIMITED:
        policy = _http.text(data.get("policyName")) or "rate limit"
        retry_after = _http.retry_after(response.headers, now)
        if retry_after is None and policy == "DAILY":
            retry_after = _DAILY_RETRY_AFTER  # the daily allowance resets at the portal's midnight
        if retry_after is None:
            interval = _http.seconds(response.headers.get("x-hubspot-ratelimit-interval-milliseconds"))
            retry_after = interval / 1000 if interval else DEFAULT_RETRY_AFTER
        return RateLimitedError(f"HubSpot rate limited the request ({policy})", retry_after=retry_after)
    if status == 401:
        return PermanentDeliveryError("HubSpot rejected the token (401)")
    if status == 403:
        return PermanentDeliveryError(
            f"HubSpot denied access (403): {message} (check the private app's scopes)"
        )
    if kind is _http.Verdict.RETRY:
        return TransientDeliveryError(
            f"HubSpot answered {status}", retry_after=_http.retry_after(response.headers, now)
        )
    label = f"{status} {category}" if category else str(status)
    return PermanentDeliveryError(f"HubSpot rejected the request ({label}): {message}")


def sanitise(message: str, secret: str) -> str:
    """One short line that never carries the token."""
    if secret:
        message = message.replace(secret, "***")
    message = re.sub(r"pat-[A-Za-z0-9-]{8,}", "***", message)
    message = " ".join(message.split())
    return message[:300]


def render_body(delivery: Delivery) -> str:
    """The call notes as HTML: summary, sentiment, compliance, score; every value escaped."""
    document = delivery.document
    analysis = _http.mapping(document.get("analysis"))
    esc = html.escape
    parts: list[str] = []
    if _analysis.is_failed(document):
        reason = _analysis.error(analysis) or "no reason given"
        parts.append(f"<p><strong>Analysis failed</strong><br>{esc(reason)}</p>")
    summary = _analysis.summary(analysis)
    if summary:
        parts.append(f"<p><strong>Summary</strong><br>{esc(summary)}</p>")
    sentiment = _analysis.sentiment(analysis)
    if sentiment:
        lines = "<br>".join(f"{esc(key.capitalize())}: {esc(value)}" for key, value in sentiment.items())
        parts.append(f"<p><strong>Sentiment</strong><br>{lines}</p>")
    state, flags = _analysis.compliance(analysis)
    if state or flags:
        parts.append(f"<p><strong>Compliance</strong>: {esc(state or 'unknown')}</p>")
        if flags:
            parts.append("<ul>" + "".join(f"<li>{esc(flag)}</li>" for flag in flags) + "</ul>")
    score = _analysis.score(analysis)
    if score is not None:
        parts.append(f"<p><strong>Score</strong>: {round(score * 100)}%</p>")
    ids = f"Kallglot session {esc(delivery.session_id)}"
    if delivery.analysis_id:
        ids += f", analysis {esc(delivery.analysis_id)}"
    parts.append(f"<p><em>{ids}</em></p>")
    return "\n".join(parts)


def _results(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    results = data.get("results")
    if not isinstance(results, list):
        return []
    return [item for item in results if isinstance(item, Mapping)]
