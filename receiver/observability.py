"""Logs (JSON by default, stable event names, ids as fields) and Sentry with scrubbing.

Nothing secret or personal leaves the process: log records carry only the fields we put in
``extra`` (ids, reasons, counts), and Sentry events are stripped of request bodies, headers,
cookies, local variables and breadcrumbs' data before they are sent.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

from receiver import tracing
from receiver.version import package_version

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(tracing.log_fields())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = record.exc_info[0].__name__
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {record.getMessage()}"
        text = f"{line} {extras}".rstrip()
        if record.exc_info and record.exc_info[0] is not None:
            text += "\n" + self.formatException(record.exc_info)
        return text


class UvicornNames(logging.Filter):
    """uvicorn logs its lifecycle ("Started server process", "Waiting for connections to close")
    as ``uvicorn.error`` at INFO: name those lines ``uvicorn`` so no one hunts for an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error":
            record.name = "uvicorn"
        return True


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(UvicornNames())
    # With log_config=None uvicorn adds no handlers: its records reach ours through the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would print every webhook; our own events say what matters.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in ("httpx", "httpcore", "botocore", "aiobotocore", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


_DROP_REQUEST_KEYS = ("data", "cookies", "headers", "query_string", "env")


def scrub_event(event: Any, hint: Any = None) -> Any:
    """Sentry ``before_send``: keep the stack and our ids; drop bodies, headers and local variables."""
    request = event.get("request")
    if isinstance(request, dict):
        for key in _DROP_REQUEST_KEYS:
            request.pop(key, None)
    for exc in (event.get("exception") or {}).get("values", []) or []:
        for frame in (exc.get("stacktrace") or {}).get("frames", []) or []:
            frame.pop("vars", None)
    for crumb in (event.get("breadcrumbs") or {}).get("values", []) or []:
        crumb.pop("data", None)
    event.pop("extra", None)
    return event


def configure_sentry(dsn: str | None, environment: str | None, release: str | None = None) -> bool:
    """Errors to Sentry, release = ``kallglot-receiver@<package version>``.

    Only ERROR logs become events. Per-call trouble (a retry, a dead letter) is a WARNING log and
    a metric; an outage is one event when it starts (``report_outage``), never one per call.
    """
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=f"kallglot-receiver@{release or package_version()}",
        # Collect no user, cookie, header, body, query or local-variable data at all (scrub_event
        # below is the second line of defence).
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "off"}},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "stack_frame_variables": False,
        },
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        before_breadcrumb=lambda crumb, hint: {k: v for k, v in crumb.items() if k != "data"},
        integrations=[
            StarletteIntegration(transaction_style="endpoint"),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
    )
    return True


def report_outage(component: str, detail: str) -> None:
    """One Sentry event when a destination starts failing (a circuit opens), not one per call."""
    if sentry_sdk.get_client().is_active():
        sentry_sdk.capture_message(f"{component} outage: {detail}", level="error")
