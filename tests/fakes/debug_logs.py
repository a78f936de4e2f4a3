"""An autouse fixture that runs a test with every logger at DEBUG through the JSON formatter.

Import it into a test module or a ``conftest.py`` (``from tests.fakes.debug_logs import debug_logs``)
and every log call made during the test builds a real record and is formatted as in production, so a
log call that raises (an ``extra=`` key that clashes with a LogRecord attribute, a value the
formatter cannot render) breaks the test instead of a delivery in production at INFO level.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator

import pytest

from receiver.observability import JsonFormatter, TextFormatter


class _FormatEverything(logging.Handler):
    """Formats each record with both production formatters; remembers any failure."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.failures: list[str] = []
        self._formatters = (JsonFormatter(), TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        for formatter in self._formatters:
            try:
                formatter.format(record)
            except Exception:  # the failure is the finding: keep it for the assertion
                self.failures.append(f"{record.name} {record.msg!r}: {traceback.format_exc(limit=1)}")


# Libraries whose DEBUG output is megabytes per test (wire traces); ours and everything else log at DEBUG.
_WIRE_LOGGERS = ("botocore", "aiobotocore", "urllib3", "httpcore", "hpack", "asyncio", "moto", "werkzeug")


@pytest.fixture(autouse=True)
def debug_logs() -> Iterator[None]:
    root = logging.getLogger()
    names = ("receiver", "handlers", "tests", *_WIRE_LOGGERS)
    saved = {name: logging.getLogger(name).level for name in names} | {"": root.level}
    handler = _FormatEverything()
    root.setLevel(logging.DEBUG)
    for name in ("receiver", "handlers", "tests"):  # even if configure_logging raised them before
        logging.getLogger(name).setLevel(logging.DEBUG)
    for name in _WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name or None).setLevel(level)
    assert not handler.failures, "log calls failed to format:\n" + "\n".join(handler.failures)
