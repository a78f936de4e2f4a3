"""Logs are JSON with stable event names and our fields; Sentry events leave without secrets."""

from __future__ import annotations

import json
import logging

from receiver.observability import JsonFormatter, UvicornNames, scrub_event


def test_json_logs_carry_the_event_name_and_the_extra_fields_only() -> None:
    record = logging.LogRecord("receiver", logging.INFO, __file__, 1, "analysis.started", (), None)
    record.session_id = "sess_1"
    record.color_message = "\x1b[36m noise"

    line = json.loads(JsonFormatter().format(record))

    assert line["event"] == "analysis.started"
    assert line["session_id"] == "sess_1"
    assert line["level"] == "info"
    assert "color_message" not in line


def test_sentry_events_are_scrubbed_of_bodies_headers_locals_and_breadcrumb_data() -> None:
    event = {
        "request": {
            "url": "http://x/webhooks/kallglot",
            "data": '{"transcript": "secret words"}',
            "headers": {"Kallglot-Signature": "t=1,v1=abc", "Authorization": "Bearer sk_live_x"},
            "cookies": {"a": "b"},
            "query_string": "token=abc",
        },
        "exception": {
            "values": [{"stacktrace": {"frames": [{"function": "f", "vars": {"api_key": "sk_live_x"}}]}}]
        },
        "breadcrumbs": {
            "values": [{"category": "httpx", "data": {"url": "https://hooks.slack.com/services/T/B/secret"}}]
        },
        "extra": {"reason": "x"},
    }

    scrubbed = scrub_event(event)

    text = json.dumps(scrubbed)
    for secret in ("secret words", "sk_live_x", "t=1,v1=abc", "token=abc", "hooks.slack.com"):
        assert secret not in text
    assert scrubbed["request"]["url"] == "http://x/webhooks/kallglot"
    assert scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]["function"] == "f"


def test_uvicorns_lifecycle_lines_are_named_uvicorn_not_uvicorn_error() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process", (), None)

    assert UvicornNames().filter(record)
    line = json.loads(JsonFormatter().format(record))

    assert (line["logger"], line["level"], line["event"]) == ("uvicorn", "info", "Started server process")
