"""Salesforce: upsert each analysed call as a completed call Task keyed on the Kallglot session id.

Authentication is the OAuth 2.0 client-credentials flow of a connected app
(``POST {login_url}/services/oauth2/token``); the token and the ``instance_url`` it names are cached
and fetched again once when Salesforce answers 401 ``INVALID_SESSION_ID``.

One delivery is one attempt: find the WhoId (``salesforce_who_id`` / a Salesforce-shaped
``crm_contact_id`` in ``call.metadata``, else SOSL over phone fields with the E.164 and national
forms of the customer's number, Contacts before Leads, oldest first), then
``PATCH /services/data/{v}/sobjects/Task/{external_id_field}/{session_id}``. The external id makes
the write idempotent by construction: 201 creates, 200/204 updates, so a retry or a replay never
makes a second Task.

Failures: token ``invalid_client``/``invalid_grant`` and other 4xx -> PermanentDeliveryError; an
unknown external id field -> PermanentDeliveryError naming it; 429 or ``REQUEST_LIMIT_EXCEEDED`` ->
RateLimitedError; ``UNABLE_TO_LOCK_ROW``/``DUPLICATE_VALUE`` (a concurrent writer), 408, 5xx,
timeouts and connection errors -> TransientDeliveryError.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator

from handlers import _analysis, _http, _phone
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

_SOSL_RESERVED = re.compile(r"""([?&|!{}\[\]()^~*:\\"'+-])""")
_SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_WHO_PREFIXES = ("003", "00Q")  # Contact, Lead
_TRANSIENT_CODES = {"UNABLE_TO_LOCK_ROW", "DUPLICATE_VALUE", "SERVER_UNAVAILABLE"}
_DESCRIPTION_CHARS = 32_000
_DEFAULT_LIMIT_WAIT = 300.0  # REQUEST_LIMIT_EXCEEDED is a rolling 24-hour allowance


class Options(HandlerOptions):
    """``type: salesforce`` (CONTRACT §3)."""

    type: Literal["salesforce"]
    client_id: str = Field(min_length=1, max_length=512)
    client_secret: SecretStr
    login_url: str = "https://login.salesforce.com"
    api_version: str = Field(default="v61.0", pattern=r"^v\d{2,3}\.0$")
    external_id_field: str = Field(default="Kallglot_Session_Id__c", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
    default_region: _phone.Region = "US"
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("client_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr) -> SecretStr:
        return not_blank(value, "client_secret")

    @field_validator("login_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value, "login_url")


def build(options: Options, context: HandlerContext) -> SalesforceHandler:
    return SalesforceHandler(options, context)


@dataclass(frozen=True)
class _Token:
    access_token: str
    instance_url: str


class SalesforceHandler:
    """The ``salesforce`` destination; owns one HTTP client and the cached access token."""

    def __init__(self, options: Options, context: HandlerContext) -> None:
        self.name = options.name
        self._options = options
        self._secret = options.client_secret.get_secret_value()
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self._clock = context.clock
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(options.timeout_seconds),
            headers={"User-Agent": context.user_agent, "Accept": "application/json"},
        )

    async def deliver(self, delivery: Delivery) -> None:
        document = delivery.document
        call = _http.mapping(document.get("call"))
        fields = self._task_fields(delivery)
        who_id = await self._who_id(call)
        if who_id:
            fields["WhoId"] = who_id
        field = self._options.external_id_field
        path = f"{self._data_path}/sobjects/Task/{field}/{quote(delivery.session_id, safe='')}"
        response = await self._api("PATCH", path, json=fields)
        if _is_subtype_update_rejection(response):
            # TaskSubtype is create-only: an existing Task rejects it, so the update goes without it.
            fields.pop("TaskSubtype")
            response = await self._api("PATCH", path, json=fields)
        if response.status_code in (200, 201, 204):
            logger.info(
                "salesforce.task_upserted",
                extra={
                    "handler": self.name,
                    "session_id": delivery.session_id,
                    "task_created": response.status_code == 201,
                },
            )
            return
        if response.status_code == 300:
            raise PermanentDeliveryError(
                f"several Tasks share {field} = {delivery.session_id}; the field must be unique"
            )
        codes, message = _errors(response, self._secret)
        if response.status_code == 404 or ("INVALID_FIELD" in codes and field.lower() in message.lower()):
            raise PermanentDeliveryError(
                f"the external id field {field} does not exist on Task (or the run-as user cannot see it): "
                f"create it as a unique External ID text field"
            )
        raise self._classify(response)

    async def probe(self) -> None:
        field = self._options.external_id_field
        response = await self._api("GET", f"{self._data_path}/sobjects/Task/describe")
        if not response.is_success:
            raise self._classify(response)
        fields = _http.json_object(response).get("fields")
        described = {
            str(item.get("name", "")).lower(): item
            for item in (fields if isinstance(fields, list) else [])
            if isinstance(item, Mapping)
        }
        found = described.get(field.lower())
        if found is None:
            raise PermanentDeliveryError(f"the external id field {field} does not exist on Task")
        if not found.get("externalId"):
            raise PermanentDeliveryError(f"the field {field} on Task is not marked External ID")

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- records ----------------------------------------------------------------------------------

    @property
    def _data_path(self) -> str:
        return f"/services/data/{self._options.api_version}"

    def _task_fields(self, delivery: Delivery) -> dict[str, Any]:
        document = delivery.document
        call = _http.mapping(document.get("call"))
        fields: dict[str, Any] = {
            "Subject": _analysis.title(document)[:255],
            "Description": render_description(delivery)[:_DESCRIPTION_CHARS],
            "Status": "Completed",
            "ActivityDate": _analysis.ended_at(call, delivery.created_at).astimezone(UTC).date().isoformat(),
            "TaskSubtype": "Call",
        }
        seconds = _analysis.duration_seconds(call)
        if seconds is not None:
            fields["CallDurationInSeconds"] = round(seconds)
        direction = _analysis.direction(call)
        if direction:
            fields["CallType"] = direction.capitalize()
        return fields

    async def _who_id(self, call: Mapping[str, Any]) -> str | None:
        metadata = _http.mapping(call.get("metadata"))
        given = _http.text(metadata.get("salesforce_who_id"))
        if given is not None:
            if not _SALESFORCE_ID.match(given):
                raise PermanentDeliveryError(
                    f"metadata salesforce_who_id {given[:40]!r} is not a Salesforce id"
                )
            return given
        generic = _http.text(metadata.get("crm_contact_id"))
        if generic and _SALESFORCE_ID.match(generic) and generic.startswith(_WHO_PREFIXES):
            return generic
        phone = _analysis.customer_phone(call)
        terms = _phone.e164_and_national(phone, self._options.default_region)
        if not terms:
            return None
        query = (
            f"FIND {{{' OR '.join(sosl_escape(term) for term in terms)}}} IN PHONE FIELDS RETURNING "
            "Contact(Id ORDER BY CreatedDate ASC LIMIT 5), "
            "Lead(Id WHERE IsConverted = false ORDER BY CreatedDate ASC LIMIT 5)"
        )
        response = await self._api("GET", f"{self._data_path}/search/", params={"q": query})
        if not response.is_success:
            raise self._classify(response)
        records = _http.json_object(response).get("searchRecords")
        found: dict[str, list[str]] = {"Contact": [], "Lead": []}
        for record in records if isinstance(records, list) else []:
            if not isinstance(record, Mapping):
                continue
            kind = _http.mapping(record.get("attributes")).get("type")
            if kind in found and record.get("Id"):
                found[kind].append(str(record["Id"]))
        matches = found["Contact"] or found["Lead"]
        return matches[0] if matches else None

    # -- HTTP -------------------------------------------------------------------------------------

    async def _api(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One REST call; a 401 fetches a new token once and repeats the call."""
        token = await self._access_token()
        response = await self._send(method, path, token, json=json, params=params)
        if response.status_code != 401:
            return response
        token = await self._access_token(stale=token)
        response = await self._send(method, path, token, json=json, params=params)
        if response.status_code == 401:
            codes, _ = _errors(response, self._secret)
            code = codes[0] if codes else "401"
            raise PermanentDeliveryError(f"Salesforce rejected a freshly issued access token ({code})")
        return response

    async def _send(
        self,
        method: str,
        path: str,
        token: _Token,
        *,
        json: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        return await _http.send(
            self._client,
            method,
            token.instance_url + path,
            who="Salesforce",
            json=json,
            params=params,
            headers={"Authorization": f"Bearer {token.access_token}"},
        )

    async def _access_token(self, *, stale: _Token | None = None) -> _Token:
        async with self._token_lock:
            if self._token is not None and self._token is not stale:
                return self._token
            self._token = None
            self._token = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> _Token:
        url = f"{self._options.login_url}/services/oauth2/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._options.client_id,
            "client_secret": self._secret,
        }
        response = await _http.send(self._client, "POST", url, who="Salesforce login", data=form)
        data = _http.json_object(response)
        if response.is_success:
            access_token, instance_url = data.get("access_token"), data.get("instance_url")
            if not isinstance(access_token, str) or not isinstance(instance_url, str):
                raise TransientDeliveryError("Salesforce token response lacked access_token or instance_url")
            if not re.match(r"^https?://[^\s/]+", instance_url):
                raise PermanentDeliveryError("Salesforce token response named an invalid instance_url")
            return _Token(access_token, instance_url.rstrip("/"))
        kind = _http.verdict(response.status_code)
        if kind is _http.Verdict.RATE_LIMITED:
            retry_after = _http.retry_after(response.headers, self._clock()) or 60.0
            raise RateLimitedError("Salesforce login rate limited the request", retry_after=retry_after)
        if kind is _http.Verdict.RETRY:
            raise TransientDeliveryError(f"Salesforce login answered {response.status_code}")
        error = _clean(str(data.get("error") or response.status_code), self._secret)
        description = _clean(str(data.get("error_description") or ""), self._secret)
        hint = ""
        if error == "invalid_grant":
            hint = " (enable the client credentials flow on the connected app and set its run-as user)"
        elif error == "invalid_client":
            hint = " (check client_id and client_secret)"
        detail = f"{error}: {description}" if description else error
        raise PermanentDeliveryError(f"Salesforce rejected the client credentials ({detail}){hint}")

    def _classify(self, response: httpx.Response) -> DeliveryError:
        status = response.status_code
        codes, message = _errors(response, self._secret)
        code = codes[0] if codes else str(status)
        kind = _http.verdict(status)
        if kind is _http.Verdict.RATE_LIMITED or "REQUEST_LIMIT_EXCEEDED" in codes:
            wait = _http.retry_after(response.headers, self._clock())
            default = 60.0 if status == 429 else _DEFAULT_LIMIT_WAIT
            return RateLimitedError(f"Salesforce limit reached ({code})", retry_after=wait or default)
        if kind is _http.Verdict.RETRY or _TRANSIENT_CODES.intersection(codes):
            return TransientDeliveryError(f"Salesforce answered {status} {code}")
        if status == 403:
            return PermanentDeliveryError(f"Salesforce denied access (403 {code}): {message}")
        return PermanentDeliveryError(f"Salesforce rejected the request ({status} {code}): {message}")


# -- pure helpers ----------------------------------------------------------------------------------


def sosl_escape(term: str) -> str:
    """Backslash every SOSL reserved character, so a number can never change the query."""
    return _SOSL_RESERVED.sub(r"\\\1", term)


def render_description(delivery: Delivery) -> str:
    """The Task's plain-text notes: summary, sentiment, compliance, score."""
    document = delivery.document
    analysis = _http.mapping(document.get("analysis"))
    lines: list[str] = []
    if _analysis.is_failed(document):
        lines.append(f"Analysis failed: {_analysis.error(analysis) or 'no reason given'}")
    summary = _analysis.summary(analysis)
    if summary:
        lines += ["Summary:", summary, ""]
    sentiment = _analysis.sentiment(analysis)
    if sentiment:
        lines.append("Sentiment:")
        lines += [f"- {key.capitalize()}: {value}" for key, value in sentiment.items()]
        lines.append("")
    state, flags = _analysis.compliance(analysis)
    if state or flags:
        lines.append(f"Compliance: {state or 'unknown'}")
        lines += [f"- {flag}" for flag in flags]
        lines.append("")
    score = _analysis.score(analysis)
    if score is not None:
        lines += [f"Score: {round(score * 100)}%", ""]
    ids = f"Kallglot session {delivery.session_id}"
    if delivery.analysis_id:
        ids += f", analysis {delivery.analysis_id}"
    lines.append(ids)
    return "\n".join(lines)


def _is_subtype_update_rejection(response: httpx.Response) -> bool:
    if response.status_code != 400:
        return False
    codes, message = _errors(response, "")
    return "INVALID_FIELD_FOR_INSERT_UPDATE" in codes and "TaskSubtype" in message


def _errors(response: httpx.Response, secret: str) -> tuple[list[str], str]:
    """Salesforce's ``[{"errorCode", "message"}]`` as (codes, first message)."""
    try:
        data = response.json()
    except ValueError:
        return [], _clean(response.reason_phrase, secret)
    items = data if isinstance(data, list) else [data]
    codes: list[str] = []
    messages: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            if item.get("errorCode"):
                codes.append(str(item["errorCode"]))
            if item.get("message"):
                messages.append(str(item["message"]))
    return codes, _clean(messages[0] if messages else response.reason_phrase, secret)


def _clean(message: str, secret: str) -> str:
    if secret:
        message = message.replace(secret, "***")
    return " ".join(message.split())[:300]
