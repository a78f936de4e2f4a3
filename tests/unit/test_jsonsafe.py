"""jsonsafe: every parsed value is one that jsonb, SQLite and UTF-8 take; the rest is refused by name."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver import jsonsafe
from receiver.jsonsafe import MAX_DEPTH, UnsafeJSON
from tests import hostile_json


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"n": 1' + b"0" * 5000 + b"}", "more than 64 digits"),
        (b'{"n": -' + b"9" * 65 + b"}", "more than 64 digits"),
        (b'{"n": 1e400}', "out of range"),
        (b'{"n": -1e400}', "out of range"),
        (b'{"n": NaN}', "NaN is not a JSON number"),
        (b'{"n": Infinity}', "Infinity is not a JSON number"),
        (b'{"a": ' * 600 + b'"\\u0000"' + b"}" * 600, "nested deeper than 64"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not valid JSON"),
    ],
    ids=[
        "5000-digits",
        "65-digits",
        "1e400",
        "-1e400",
        "nan",
        "infinity",
        "600-deep-nul",
        "100k-deep",
        "utf16",
        "junk",
    ],
)
def test_strict_refuses_what_a_backend_would_refuse_naming_it(body: bytes, problem: str) -> None:
    with pytest.raises(UnsafeJSON, match=problem):
        jsonsafe.loads(body, strict=True)


def test_lenient_turns_unrepresentable_numbers_into_null() -> None:
    body = b'{"a": 1e400, "b": NaN, "c": 1' + b"0" * 5000 + b', "d": 2.5, "e": 7}'
    assert jsonsafe.loads(body, strict=False) == {"a": None, "b": None, "c": None, "d": 2.5, "e": 7}


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
def test_nuls_are_dropped_and_lone_surrogates_replaced_in_values_and_keys(strict: bool) -> None:
    body = b'{"k\\u0000\\udc00": ["a\\u0000b", "\\ud800x", "\\ud83d\\ude00"]}'
    assert jsonsafe.loads(body, strict=strict) == {"k\ufffd": ["ab", "\ufffdx", "\U0001f600"]}


def test_the_deepest_accepted_nesting_is_max_depth() -> None:
    assert jsonsafe.loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(UnsafeJSON):
        jsonsafe.loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


def _walk_is_safe(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
            assert "\x00" not in item
        elif isinstance(item, float):
            assert math.isfinite(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            assert len(str(abs(item))) <= jsonsafe.MAX_INT_DIGITS
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key in item:
                key.encode("utf-8")
                assert "\x00" not in key
            stack.extend(item.values())


@given(hostile_json.json_text(), st.booleans())
def test_any_json_text_is_refused_by_name_or_parsed_into_a_safe_value(text: str, strict: bool) -> None:
    try:
        parsed = jsonsafe.loads(hostile_json.encode(text), strict=strict)
    except UnsafeJSON:
        return  # refused by name: fine; anything else escaping fails the test
    _walk_is_safe(parsed)
    json.dumps(parsed, allow_nan=False).encode("utf-8")


@given(hostile_json.json_text(), st.booleans())
def test_the_no_escape_shortcut_gives_what_the_full_walk_gives(text: str, strict: bool) -> None:
    """Bytes without a \\u escape and with few brackets skip the walk (str input always walks):
    both must give the same value, or both refuse."""
    body = hostile_json.encode(text)
    try:
        walked = jsonsafe.loads(body.decode("utf-8"), strict=strict)
    except UnicodeDecodeError:
        return  # not UTF-8: refused by name before either path (test above)
    except UnsafeJSON:
        with pytest.raises(UnsafeJSON):
            jsonsafe.loads(body, strict=strict)
        return
    assert json.dumps(jsonsafe.loads(body, strict=strict), sort_keys=True) == json.dumps(
        walked, sort_keys=True
    )


@pytest.mark.parametrize(
    "value",
    ["yesterday", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", ""],
)
def test_iso_datetime_refuses_what_handlers_cannot_convert(value: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601|out of range"):
        jsonsafe.iso_datetime(value)


def test_iso_datetime_takes_zoned_and_naive_times() -> None:
    assert jsonsafe.iso_datetime("2026-03-26T11:04:20Z").utcoffset() is not None
    assert jsonsafe.iso_datetime("2026-03-26 11:04:20").utcoffset() is not None
