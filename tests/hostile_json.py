"""Hypothesis strategies for what a signed sender can put in a JSON body, as raw JSON text.

Python's ``json.dumps`` cannot write most of what hurts (``1e400``, 5,000-digit integers, lone
surrogate escapes, ``NaN``), so values are built as JSON *text*: ``json_text()`` draws a document
and renders it, keeping these raw tokens raw. ``odd_dates()`` are the ``ended_at`` values that
broke the CRM handlers. Shared by the unit tests of ``receiver.jsonsafe`` and the end-to-end suite.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from hypothesis import strategies as st

#: ``HYPOTHESIS_PROFILE=long`` multiplies the example counts of the generated-input suites.
SCALE = 25 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 1


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is."""

    text: str


RAW_TOKENS = [
    "1e400",
    "-1e400",
    "1E+999",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" + "0" * 5000,
    "-" + "9" * 65,
    "9" * 64,
    "1e308",
    "-0.0",
    "5e-324",
    '"\\udc00"',
    '"\\ud800\\u0000x"',
    '"\\u0000"',
    '"a\\ud83d\\ude00b"',
    '"\\u2028\\ufeff"',
]


def _deep(depth: int) -> Raw:
    return Raw('{"a": ' * depth + '"\\u0000"' + "}" * depth)


raw_tokens = st.sampled_from([Raw(token) for token in RAW_TOKENS]) | st.sampled_from(
    [_deep(63), _deep(65), _deep(600), Raw("[" * 1100 + "]" * 1100)]
)

odd_dates = st.sampled_from(
    [
        "2026-03-26T11:04:20Z",
        "2026-03-26 11:04:20",
        "2026-03-26",
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59.999999+00:00",
        "2026-02-30T00:00:00Z",
        "yesterday",
        "",
        "\udc00",
        "2026-03-26T11:04:20\x00Z",
    ]
) | st.text(max_size=30)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
leaves = scalars | raw_tokens
keys = st.text(max_size=8) | st.sampled_from(["\udc00", "\x00", "ended_at", "id", "type", "summary"])


def values(max_leaves: int = 12) -> st.SearchStrategy[object]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=max_leaves,
    )


def render(value: object) -> str:
    """JSON text of ``value`` with ``Raw`` tokens kept raw and lone surrogates as escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{render(str(key))}:{render(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)


def encode(text: str) -> bytes:
    """UTF-8 of a JSON text (its lone surrogates are already escapes, so this never fails)."""
    return text.encode("utf-8", "surrogatepass")


def json_text(max_leaves: int = 12) -> st.SearchStrategy[str]:
    return values(max_leaves).map(render)
