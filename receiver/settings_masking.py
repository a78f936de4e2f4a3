"""Masking for ``check-config``: every secret setting and handler option shown as ``***``.

A secret URL keeps its readable parts (scheme, host) when masking hid its credentials.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from receiver import redact

_SECRET_KEYS = re.compile(r"(token|secret|password|key|dsn|credential|webhook_url)$", re.IGNORECASE)
_NOT_SECRET = {"key", "kms_key_id"}


def mask(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return _mask_secret(value.get_secret_value())
    if isinstance(value, list):
        return [mask(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return redact.mask_urls(value)


def _mask_secret(text: str) -> str:
    """A secret URL keeps its readable parts when masking hid something; anything else is ``***``."""
    if redact.looks_like_url(text):
        shown = redact.mask_url(text)
        if shown != text or not _URL_CAN_HIDE_SECRETS.search(text):
            return shown
    return "***"


# A URL with nothing recognisably secret is still all secret when it has a path or query that could
# hold one (a webhook path token); only a bare scheme://host[:port][/file-path] is shown as is.
_URL_CAN_HIDE_SECRETS = re.compile(r"^(https?|wss?)://")


def mask_handler(handler: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in handler.items():
        if key == "headers" and isinstance(value, dict):
            out[key] = {name: "***" for name in value}
        elif key not in _NOT_SECRET and _SECRET_KEYS.search(key) and value:
            out[key] = _mask_secret(value) if isinstance(value, str) else "***"
        else:
            out[key] = redact.mask_urls(value)
    return out
