"""The console's session: a signed cookie (HttpOnly, SameSite=Strict, Path=/admin/console) that
holds a CSRF token and whether the admin token was given; the token itself is never stored in it,
in a URL or in a page.

The signing key is derived from RECEIVER_ADMIN_TOKEN, so rotating the token ends every session.
Every POST must carry the session's CSRF token in its form (``csrf``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "krc_session"
PATH = "/admin/console"
MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class Session:
    csrf: str
    authenticated: bool


def _serializer(admin_token: str) -> URLSafeTimedSerializer:
    key = hmac.new(admin_token.encode(), b"kallglot-receiver console session", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(key, salt="console")


def load(request: Request, admin_token: str) -> Session | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(admin_token).loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return None
    return Session(csrf=data["csrf"], authenticated=data.get("auth") is True)


def new(authenticated: bool) -> Session:
    return Session(csrf=secrets.token_urlsafe(24), authenticated=authenticated)


def store(response: Response, session: Session, admin_token: str, secure: bool) -> None:
    value = _serializer(admin_token).dumps({"csrf": session.csrf, "auth": session.authenticated})
    response.set_cookie(
        COOKIE, value, max_age=MAX_AGE, path=PATH, httponly=True, samesite="strict", secure=secure
    )


def clear(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def csrf_ok(session: Session | None, submitted: object) -> bool:
    return (
        session is not None
        and isinstance(submitted, str)
        and hmac.compare_digest(session.csrf.encode(), submitted.encode())
    )
