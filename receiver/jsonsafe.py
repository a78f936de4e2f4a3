"""JSON that every backend stores and every handler delivers: parse bytes into a safe value; pure.

Python's ``json`` accepts more than the stores and the handlers do: ``NaN``/``Infinity`` and
``1e400`` (which parses as ``inf``) are not JSON and PostgreSQL's jsonb refuses them; an integer of
thousands of digits raises ``ValueError`` in ``int()`` and again in ``json.dumps``; a lone
surrogate (``"\\udc00"``) is a valid JSON escape but not Unicode, so jsonb refuses it and any
``.encode()`` raises; a NUL is refused by jsonb; very deep nesting ends in ``RecursionError``
wherever the value is walked. One row a backend refuses is refused on every retry, so the value
is made safe once, before anything is stored:

- ``strict=True`` (inbound events): what cannot be represented is refused with ``UnsafeJSON``
  naming the problem (HTTP 400 at the door).
- ``strict=False`` (what Kallglot returns): numbers that cannot be represented become ``null``,
  so a result we paid for is still delivered.
- Both modes: NUL characters are dropped and lone surrogates become U+FFFD, in values and keys;
  nesting deeper than ``MAX_DEPTH`` is refused (the walk is depth-limited, never a RecursionError).

``iso_datetime`` checks a date-time string for the fields the handlers turn into dates.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted; Kallglot's documents are a handful of levels deep."""
MAX_INT_DIGITS = 64
"""Longest integer accepted; far beyond any id, count or amount, far below int()'s 4300 limit."""

_UNSAFE_CHARS = re.compile("[\x00\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """The bytes are not JSON that can be stored and delivered; the message names the problem."""


def loads(body: bytes | str, *, strict: bool = True) -> Any:
    """Parse ``body`` into a value safe for jsonb, SQLite and UTF-8 (see the module docstring)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise UnsafeJSON("body is not UTF-8") from None
    try:
        value = _DECODERS[strict].decode(text)
    except json.JSONDecodeError:
        raise UnsafeJSON("body is not valid JSON") from None
    except RecursionError:
        raise UnsafeJSON(f"body is nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(body, bytes) and "\\u" not in text and text.count("[") + text.count("{") < MAX_DEPTH:
        # Nothing to clean (the common case; the walk was a tenth of ingest's CPU): strict UTF-8
        # cannot hold a lone surrogate and json refuses a raw NUL, so either needs a \u escape;
        # fewer brackets than MAX_DEPTH cannot nest that deep.
        return value
    return clean(value)


def clean(value: Any, depth: int = 0) -> Any:
    """``value`` with NULs dropped and lone surrogates replaced, in strings and keys; depth-limited."""
    if isinstance(value, str):
        return clean_text(value)
    if depth >= MAX_DEPTH and isinstance(value, list | dict):
        raise UnsafeJSON(f"body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [clean(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {clean_text(str(key)): clean(item, depth + 1) for key, item in value.items()}
    return value


def clean_text(text: str) -> str:
    """``text`` without NUL characters and with each lone surrogate replaced by U+FFFD."""
    if not _UNSAFE_CHARS.search(text):
        return text
    return _UNSAFE_CHARS.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def _constant(strict: bool) -> Any:
    def parse(name: str) -> Any:
        if strict:
            raise UnsafeJSON(f"body is not valid JSON ({name} is not a JSON number)")
        return None

    return parse


def _integer(strict: bool) -> Any:
    def parse(digits: str) -> int | None:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            if strict:
                raise UnsafeJSON(f"an integer has more than {MAX_INT_DIGITS} digits")
            return None
        return int(digits)

    return parse


def _float(strict: bool) -> Any:
    def parse(text: str) -> float | None:
        number = float(text)
        if not math.isfinite(number):
            if strict:
                raise UnsafeJSON(f"the number {text[:20]} is out of range")
            return None
        return number

    return parse


def iso_datetime(value: str) -> datetime:
    """An ISO 8601 date-time whose UTC moment lies in years 1..9999; ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date-time such as 2026-03-26T11:04:20Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
        moment.timestamp()
    except (OverflowError, ValueError):
        raise ValueError("is out of range") from None
    return moment


#: One decoder per mode, built once: ``json.loads`` with hooks builds a decoder and its scanner on
#: every call.
_DECODERS = {
    strict: json.JSONDecoder(
        parse_constant=_constant(strict), parse_int=_integer(strict), parse_float=_float(strict)
    )
    for strict in (True, False)
}
