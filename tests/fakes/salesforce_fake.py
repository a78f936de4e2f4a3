"""A Salesforce fake: client-credentials login and the REST calls the ``salesforce`` handler makes.

Token endpoint (``invalid_client`` / ``invalid_grant``), tokens that expire on demand (401
``INVALID_SESSION_ID``), external-id upsert on Task with the real semantics (201 create, 200 update,
404 for an unknown external id field, 400 for unknown fields, create-only ``TaskSubtype``), SOSL
phone search that rejects unescaped reserved characters, Task describe, and failures on demand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TASK_FIELDS = {
    "Subject",
    "Description",
    "Status",
    "ActivityDate",
    "CallDurationInSeconds",
    "CallType",
    "TaskSubtype",
    "WhoId",
    "WhatId",
    "Priority",
    "OwnerId",
}
CALL_TYPES = {"Inbound", "Outbound", "Internal"}
_RESERVED = set("?&|!{}[]()^~*:\\\"'+-")


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    path: str | None = None


@dataclass
class SalesforceFake:
    client_id: str = "3MVG9fake.client.id"
    client_secret: str = "fake-client-secret-0001"
    grant_enabled: bool = True
    external_id_fields: set[str] = field(default_factory=lambda: {"Kallglot_Session_Id__c"})
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    people: dict[str, dict[str, Any]] = field(default_factory=dict)  # Contacts (003…) and Leads (00Q…)
    valid_tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    searches: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    delay: float = 0.0  # seconds before every answer (timeouts)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- test helpers -------------------------------------------------------------------------------

    def add_contact(self, phone: str = "", mobile: str = "") -> str:
        return self._add_person("003", "Contact", Phone=phone, MobilePhone=mobile)

    def add_lead(self, phone: str = "", converted: bool = False) -> str:
        return self._add_person("00Q", "Lead", Phone=phone, IsConverted=converted)

    def _add_person(self, prefix: str, kind: str, **values: Any) -> str:
        record_id = f"{prefix}{next(self._ids):012d}AAA"
        self.people[record_id] = {"Id": record_id, "type": kind, **values}
        return record_id

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def fail_next(self, status: int, body: Any = None, *, path: str | None = None, **headers: str) -> None:
        self.failures.append(
            Failure(status, body, {k.replace("_", "-"): v for k, v in headers.items()}, path)
        )

    def tasks_for(self, session_id: str, fld: str = "Kallglot_Session_Id__c") -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if t.get(fld) == session_id]

    # -- the app ------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        data = "/services/data/{version}"
        routes = [
            Route("/services/oauth2/token", self._token, methods=["POST"]),
            Route(data + "/sobjects/Task/describe", self._describe, methods=["GET"]),
            Route(data + "/sobjects/Task/{fld}/{value}", self._upsert, methods=["PATCH"]),
            Route(data + "/search/", self._search, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_Gate, fake=self)
        return app

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        # parsed by hand: Starlette's form parser needs python-multipart, which we do not depend on
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return _oauth_error("invalid_client", "invalid client credentials")
        if not self.grant_enabled:
            return _oauth_error("invalid_grant", "no client credentials user enabled")
        token = f"00Dfake!token{self.token_requests}"
        self.valid_tokens.add(token)
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "access_token": token,
                "instance_url": base,
                "id": f"{base}/id/00Dfake/005fake",
                "token_type": "Bearer",
                "issued_at": "1711454400000",
                "signature": "fake",
            }
        )

    async def _describe(self, request: Request) -> Response:
        fields = [{"name": "Id", "externalId": False, "idLookup": True}]
        fields += [{"name": name, "externalId": False} for name in sorted(TASK_FIELDS)]
        fields += [
            {"name": name, "externalId": True, "unique": True, "idLookup": True}
            for name in sorted(self.external_id_fields)
        ]
        return JSONResponse({"name": "Task", "fields": fields})

    async def _upsert(self, request: Request) -> Response:
        fld, value = request.path_params["fld"], request.path_params["value"]
        if fld not in self.external_id_fields:
            return _sf_error(
                404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {fld}"
            )
        body = await request.json()
        unknown = set(body) - TASK_FIELDS
        if unknown:
            name = sorted(unknown)[0]
            return _sf_error(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type Task")
        if "CallType" in body and body["CallType"] not in CALL_TYPES:
            return _sf_error(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Call Type: bad value")
        who = body.get("WhoId")
        if who is not None and who not in self.people:
            return _sf_error(400, "INVALID_CROSS_REFERENCE_KEY", "Name ID: id value of incorrect type")
        existing = self.tasks_for(value, fld)
        if existing:
            if "TaskSubtype" in body:
                return _sf_error(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "Unable to create/update fields: TaskSubtype. Please check the security settings of this "
                    "field and verify that it is read/write for your profile or permission set.",
                )
            existing[0].update(body)
            return JSONResponse({"id": existing[0]["Id"], "success": True, "errors": [], "created": False})
        task_id = f"00T{next(self._ids):012d}AAA"
        self.tasks[task_id] = {"Id": task_id, fld: value, **body}
        return JSONResponse({"id": task_id, "success": True, "errors": [], "created": True}, status_code=201)

    async def _search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        self.searches.append(query)
        match = re.match(r"^FIND \{((?:\\.|[^\\}])*)\} IN PHONE FIELDS RETURNING (.+)$", query)
        if not match:
            return _sf_error(400, "MALFORMED_SEARCH", "unexpected token")
        terms = []
        for raw in match.group(1).split(" OR "):
            unescaped, index = [], 0
            while index < len(raw):
                char = raw[index]
                if char == "\\":
                    unescaped.append(raw[index + 1])
                    index += 2
                    continue
                if char in _RESERVED:
                    return _sf_error(400, "MALFORMED_SEARCH", f"unexpected token: '{char}'")
                unescaped.append(char)
                index += 1
            terms.append(_digits("".join(unescaped)))
        returning = match.group(2)
        found = []
        for person in self.people.values():
            if person["type"] not in returning:
                continue
            if person["type"] == "Lead" and person.get("IsConverted") and "IsConverted = false" in returning:
                continue
            numbers = [_digits(person.get(key) or "") for key in ("Phone", "MobilePhone")]
            if any(n and t and (n == t or n.endswith(t)) for n in numbers for t in terms if len(t) >= 7):
                found.append({"attributes": {"type": person["type"]}, "Id": person["Id"]})
        return JSONResponse({"searchRecords": found})


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


def _sf_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code}], status_code=status)


class _Gate:
    """Bearer check on the REST API, request log and queued failures."""

    def __init__(self, app: Any, fake: SalesforceFake) -> None:
        self.app = app
        self.fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fake = self.fake
        path = scope["path"]
        fake.requests.append((scope["method"], path))
        if fake.delay:
            await asyncio.sleep(fake.delay)
        response: Response | None = None
        for failure in fake.failures:
            if failure.path is None or failure.path in path:
                fake.failures.remove(failure)
                response = Response(
                    json.dumps(failure.body),
                    status_code=failure.status,
                    headers=failure.headers,
                    media_type="application/json",
                )
                break
        if response is None and path.startswith("/services/data/"):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in fake.valid_tokens:
                response = _sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)
