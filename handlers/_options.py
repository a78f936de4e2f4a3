"""Option checks shared by the handler types: URLs, non-blank and signing secrets, ``str.format`` templates."""

from __future__ import annotations

import string
from collections.abc import Collection
from urllib.parse import urlsplit

from pydantic import SecretStr

from receiver.secret_settings import standard_webhooks_secret


def http_url(value: str, option: str = "the URL") -> str:
    """``value`` without surrounding blanks or a trailing slash; ValueError unless it is http(s)."""
    value = value.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError(f"{option} must be an http(s) URL")
    return value


def not_blank(value: SecretStr, option: str) -> SecretStr:
    if not value.get_secret_value().strip():
        raise ValueError(f"{option} must not be empty")
    return value


def whsec_secret(value: SecretStr | None, option: str = "secret") -> SecretStr | None:
    """A Standard Webhooks signing secret (``whsec_`` + base64) of at least 16 bytes of key.

    An empty or short key lets anyone forge what the receiving system trusts (CONTRACT §9)."""
    if value is None:
        return None
    try:
        standard_webhooks_secret(value)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None
    return value


def placeholders(template: str, allowed: Collection[str], option: str) -> frozenset[str]:
    """Validate a ``str.format``-style template: known names only, no format spec or conversion
    (so nothing but plain substitution can happen); return the names it uses."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{option} is not a valid format string: {exc}") from None
    used: set[str] = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed:
            raise ValueError(f"{option} placeholder {{{field}}} is unknown; use {', '.join(sorted(allowed))}")
        if spec or conversion:
            raise ValueError(f"{option} placeholder {{{field}}} may not carry a format spec")
        used.add(field)
    return frozenset(used)
