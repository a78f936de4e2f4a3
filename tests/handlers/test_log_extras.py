"""No log call anywhere in the project passes an ``extra=`` key that a LogRecord already has.

``logging`` raises KeyError for such a key ("Attempt to overwrite 'created' in LogRecord"), but only
when the level is enabled, so the bug hides in tests that run at WARNING and breaks the work around
the log call in production (issue 8 hole 10: every successful Salesforce upsert was retried).
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("receiver", "handlers", "tests", "bench")
# What makeRecord refuses, plus the attributes the formatters add or read.
RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def reserved_extra_keys(source: str) -> list[tuple[int, str]]:
    """``(line, key)`` for every ``extra={...}`` / ``extra=dict(...)`` key that clashes."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg != "extra":
                continue
            value = keyword.value
            keys: list[str] = []
            if isinstance(value, ast.Dict):
                keys = [
                    k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
                ]
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
                keys = [k.arg for k in value.keywords if k.arg is not None]
            found += [(value.lineno, key) for key in keys if key in RESERVED]
    return found


def test_the_project_has_modules_to_check() -> None:
    names = {path.name for path in _modules()}
    assert {"salesforce.py", "starting.py", "workers.py"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_extra_key_overwrites_a_log_record_attribute(path: Path) -> None:
    clashes = reserved_extra_keys(path.read_text())
    assert clashes == [], f"{path.relative_to(ROOT)}: extra= keys that LogRecord owns: {clashes}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('log.info("x", extra={"created": True})', [(1, "created")]),
        ('log.info("x", extra=dict(name="a", session_id="s"))', [(1, "name")]),
        ('log.warning("x", extra={"message": 1, "module": 2})', [(1, "message"), (1, "module")]),
        ('log.info("x", extra={"session_id": "s", "handler": "h"})', []),
        ('Model(extra="forbid")', []),
    ],
    ids=["created", "dict-call", "two-keys", "fine", "not-a-dict"],
)
def test_the_guard_recognises_clashing_keys(source: str, expected: list[tuple[int, str]]) -> None:
    assert reserved_extra_keys(source) == expected


def test_a_clashing_key_really_breaks_an_enabled_log_call() -> None:
    logger = logging.getLogger("tests.handlers.log_extras")
    logger.setLevel(logging.INFO)
    try:
        clashing = {"created": True}
        with pytest.raises(KeyError):
            logger.info("x", extra=clashing)
    finally:
        logger.setLevel(logging.NOTSET)
