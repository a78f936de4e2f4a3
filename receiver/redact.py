"""Credentials inside URLs, hidden for display (check-config prints into pod logs); pure.

A URL keeps what an operator needs to recognise it (scheme, host, port, path, harmless query
parameters) and loses what would let a reader use it:

- the userinfo password (``https://user:***@host``); a username alone is masked too, since
  ``https://<token>@host`` is a common way to pass a token (Sentry DSNs, Git hosts);
- the values of query parameters whose name says credential (``token``, ``key``, ``secret``,
  ``sig``/``signature``, ``password``, ``auth``, ``credential``: ``X-Amz-Signature`` too);
- the secret path segment of Slack incoming webhooks (``/services/T…/B…/***``,
  ``/workflows/…/***``, ``/triggers/…/***``);
- any fragment.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

MASK = "***"

_CREDENTIAL_PARAM = re.compile(r"token|key|secret|sig|password|passwd|pwd|auth|credential", re.IGNORECASE)
_SLACK_HOST = re.compile(r"(^|\.)slack(-gov)?\.com$", re.IGNORECASE)
_SLACK_SECRET_PATHS = ("/services/", "/workflows/", "/triggers/")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def looks_like_url(value: str) -> bool:
    return bool(_URL.match(value))


def mask_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***`` (see the module docstring)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK  # not parseable: show nothing rather than guess which part is secret
    netloc = _netloc(parts, port)
    path = _path(parts)
    query = _query(parts.query)
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _netloc(parts: SplitResult, port: int | None) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    if parts.password is not None:
        return f"{parts.username}:{MASK}@{host}"
    if parts.username:
        return f"{MASK}@{host}"
    return host


def _path(parts: SplitResult) -> str:
    path = parts.path
    if _SLACK_HOST.search(parts.hostname or "") and path.startswith(_SLACK_SECRET_PATHS):
        head, _, _secret = path.rstrip("/").rpartition("/")
        return f"{head}/{MASK}"
    return path


def _query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [
        f"{quote(name, safe='')}={MASK if _CREDENTIAL_PARAM.search(name) and value else quote(value, safe='')}"
        for name, value in pairs
    ]
    return "&".join(shown)


def mask_urls(value: Any) -> Any:
    """``value`` with every string that is a URL masked, in nested lists and mappings."""
    if isinstance(value, str):
        return mask_url(value) if looks_like_url(value) else value
    if isinstance(value, list):
        return [mask_urls(item) for item in value]
    if isinstance(value, dict):
        return {key: mask_urls(item) for key, item in value.items()}
    return value
