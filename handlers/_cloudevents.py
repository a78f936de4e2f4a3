"""A delivery as a CloudEvents 1.0 HTTP message (binary or structured mode), via the ``cloudevents`` SDK.

The attributes are fixed by the delivery, so every retry and replay sends the same event:
``id`` = delivery id (a consumer deduplicates on ``source`` + ``id``, as the spec says),
``type`` = ``com.kallglot.call.analysis.completed`` / ``…failed``, ``subject`` = the Kallglot
session id, ``time`` = when the delivery was created (not when it was sent), ``datacontenttype`` =
``application/json`` and ``data`` = the §8 document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from receiver.delivery import Delivery

Mode = Literal["binary", "structured"]
TYPE_PREFIX = "com.kallglot.call.analysis."
DEFAULT_SOURCE = "/kallglot-receiver"

_FORMAT = JSONFormat()


def event(delivery: Delivery, source: str) -> CloudEvent:
    return CloudEvent(
        attributes={
            "id": delivery.id,
            "source": source,
            "type": TYPE_PREFIX + delivery.status,
            "subject": delivery.session_id,
            "time": _utc(delivery.created_at),
            "datacontenttype": "application/json",
        },
        data=delivery.document,
    )


def _utc(moment: datetime) -> datetime:
    """RFC 3339 needs an offset: a naive time is taken as UTC, any other is converted to it."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode(delivery: Delivery, source: str, mode: Mode) -> tuple[dict[str, str], bytes]:
    """``(headers, body)``: binary mode puts the attributes in ``ce-*`` headers and the document in
    the body; structured mode sends one ``application/cloudevents+json`` envelope."""
    message = (to_binary if mode == "binary" else to_structured)(event(delivery, source), _FORMAT)
    return dict(message.headers), message.body
