"""A HubSpot CRM fake: the subset of the v3/v4 API the ``hubspot`` handler speaks, kept in memory.

Bearer-token check (401), contact list/search/create, call batch upsert with ``idProperty``
semantics (the property must be unique, 400 otherwise), v4 associations, rate-limit headers on
every answer, and failures queued on demand (``fail_next``) for 429 / 5xx / anything.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CALL_PROPERTIES = {
    "hs_timestamp",
    "hs_call_title",
    "hs_call_body",
    "hs_call_duration",
    "hs_call_direction",
    "hs_call_status",
    "hs_call_from_number",
    "hs_call_to_number",
    "hubspot_owner_id",
}
CONTACT_PROPERTIES = {"phone", "mobilephone", "email", "firstname", "lastname"}
MAX_FILTER_GROUPS = 5
CONTACT_TO_CALL = 193


@dataclass
class Failure:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    path: str | None = None  # only requests whose path contains this
    after: bool = False  # carry the request out, then answer with the failure (a lost answer)
    exact: bool = False  # ``path`` must be the whole path, not a part of it


@dataclass
class HubSpotFake:
    token: str = "pat-na1-fake-token-0001"
    unique_call_properties: set[str] = field(default_factory=lambda: {"kallglot_session_id"})
    ratelimit_remaining: int = 99
    index_new_contacts: bool = True  # False: contacts created over the API are not yet searchable
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    associations: set[tuple[str, str]] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    delay: float = 0.0  # seconds before every answer (timeouts)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))
    _unindexed: set[str] = field(default_factory=set)

    # -- test helpers -------------------------------------------------------------------------------

    def add_contact(self, *, indexed: bool = True, **properties: str) -> str:
        contact_id = str(next(self._ids))
        self.contacts[contact_id] = {"id": contact_id, "properties": {"createdate": contact_id, **properties}}
        if not indexed:
            self._unindexed.add(contact_id)
        return contact_id

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        path: str | None = None,
        after: bool = False,
        exact: bool = False,
        **headers: str,
    ) -> None:
        """Answer the next (matching) request with ``status``; ``after``: carry it out first."""
        self.failures.append(
            Failure(status, body, {k.replace("_", "-"): v for k, v in headers.items()}, path, after, exact)
        )

    def calls_for(self, session_id: str, prop: str = "kallglot_session_id") -> list[dict[str, Any]]:
        return [c for c in self.calls.values() if c["properties"].get(prop) == session_id]

    def contacts_of(self, call_id: str) -> set[str]:
        return {contact for call, contact in self.associations if call == call_id}

    # -- the app ------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/crm/v3/objects/contacts", self._contacts, methods=["GET", "POST"]),
            Route("/crm/v3/objects/contacts/search", self._search_contacts, methods=["POST"]),
            Route("/crm/v3/objects/calls/batch/upsert", self._upsert_calls, methods=["POST"]),
            Route(
                "/crm/v4/objects/calls/{call_id}/associations/contacts", self._call_contacts, methods=["GET"]
            ),
            Route(
                "/crm/v4/objects/calls/{call_id}/associations/default/contacts/{contact_id}",
                self._associate,
                methods=["PUT"],
            ),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_Gate, fake=self)
        return app

    def _headers(self) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": str(self.ratelimit_remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
        }

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=self._headers())

    async def _contacts(self, request: Request) -> Response:
        if request.method == "GET":
            limit = int(request.query_params.get("limit", "10"))
            return self._json({"results": list(self.contacts.values())[:limit]})
        body = await request.json()
        properties = body.get("properties", {})
        unknown = set(properties) - CONTACT_PROPERTIES
        if unknown:
            return _validation(f"Property {sorted(unknown)[0]!r} does not exist")
        calls = []
        for association in body.get("associations", []):
            to = str(association.get("to", {}).get("id"))
            types = association.get("types", [])
            if types != [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": CONTACT_TO_CALL}]:
                return _validation(f"association types {types} are not valid for contact to call")
            if to not in self.calls:
                return _validation(f"No call with ID {to} exists")
            calls.append(to)
        # One request, one outcome: the contact and its associations are written together or not at all.
        contact_id = self.add_contact(indexed=self.index_new_contacts, **properties)
        self.associations.update((call_id, contact_id) for call_id in calls)
        return self._json(self.contacts[contact_id], 201)

    async def _search_contacts(self, request: Request) -> Response:
        body = await request.json()
        groups = body.get("filterGroups", [])
        if len(groups) > MAX_FILTER_GROUPS:
            return _validation("Too many filter groups")
        found = [
            contact
            for contact in self.contacts.values()
            if contact["id"] not in self._unindexed
            and any(all(_matches(contact, f) for f in group.get("filters", [])) for group in groups)
        ]
        for sort in reversed(body.get("sorts", [])):
            found.sort(
                key=lambda c, prop=sort["propertyName"]: int(c["properties"].get(prop, "0")),
                reverse=sort.get("direction") == "DESCENDING",
            )
        limit = int(body.get("limit", 10))
        return self._json({"total": len(found), "results": found[:limit]})

    async def _upsert_calls(self, request: Request) -> Response:
        body = await request.json()
        results = []
        for item in body.get("inputs", []):
            id_property = item.get("idProperty")
            if id_property not in self.unique_call_properties:
                return _validation(
                    f"Unable to perform update/upsert by non-unique 0-48 property {id_property} in portal 1"
                )
            properties = dict(item.get("properties", {}))
            unknown = set(properties) - CALL_PROPERTIES - self.unique_call_properties
            if unknown:
                return _validation(
                    'Property values were not valid: [{"isValid":false,"message":"Property \\"'
                    f'{sorted(unknown)[0]}\\" does not exist","error":"PROPERTY_DOESNT_EXIST"}}]'
                )
            if properties.get("hs_call_direction", "INBOUND") not in ("INBOUND", "OUTBOUND"):
                return _validation("hs_call_direction was not one of the allowed options")
            properties[id_property] = item["id"]
            existing = self.calls_for(item["id"], id_property)
            if existing:
                record = existing[0]
                record["properties"].update(properties)
                new = False
            else:
                if "hs_timestamp" not in properties:
                    return _validation("hs_timestamp is required")
                call_id = str(next(self._ids))
                record = {"id": call_id, "properties": properties}
                self.calls[call_id] = record
                new = True
            results.append({**record, "new": new})
        return self._json({"status": "COMPLETE", "results": results})

    async def _call_contacts(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        if call_id not in self.calls:
            return self._json({"results": []})
        results = [
            {"toObjectId": int(contact), "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 194}]}
            for contact in sorted(self.contacts_of(call_id))
        ]
        return self._json({"results": results})

    async def _associate(self, request: Request) -> Response:
        call_id, contact_id = request.path_params["call_id"], request.path_params["contact_id"]
        if call_id not in self.calls or contact_id not in self.contacts:
            return self._json(
                {
                    "status": "error",
                    "message": f"No contact with ID {contact_id} exists",
                    "category": "OBJECT_NOT_FOUND",
                },
                404,
            )
        self.associations.add((call_id, contact_id))
        return self._json(
            {"status": "COMPLETE", "results": [{"from": {"id": call_id}, "to": {"id": contact_id}}]}
        )


def _matches(contact: dict[str, Any], rule: dict[str, Any]) -> bool:
    if rule.get("operator") != "EQ":
        return False
    return contact["properties"].get(rule.get("propertyName")) == rule.get("value")


def _validation(message: str) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "message": message, "correlationId": "fake-corr", "category": "VALIDATION_ERROR"},
        status_code=400,
    )


class _Gate:
    """Token check, request log and queued failures, before any route."""

    def __init__(self, app: Any, fake: HubSpotFake) -> None:
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
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        response: Response | None = None
        lost_answer = False
        if headers.get("authorization") != f"Bearer {fake.token}":
            response = JSONResponse(
                {
                    "status": "error",
                    "message": "Authentication credentials not found.",
                    "category": "INVALID_AUTHENTICATION",
                },
                status_code=401,
            )
        else:
            for failure in fake.failures:
                if failure.path is None or (path == failure.path if failure.exact else failure.path in path):
                    fake.failures.remove(failure)
                    lost_answer = failure.after
                    body = (
                        failure.body if failure.body is not None else {"status": "error", "message": "fake"}
                    )
                    response = Response(
                        json.dumps(body),
                        status_code=failure.status,
                        headers={**fake._headers(), **failure.headers},
                        media_type="application/json",
                    )
                    break
        if response is None:
            await self.app(scope, receive, send)
        elif lost_answer:

            async def discard(message: Any) -> None:
                return None

            await self.app(scope, receive, discard)
            await response(scope, receive, send)
        else:
            await response(scope, receive, send)
