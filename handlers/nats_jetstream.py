"""NATS JetStream: publish each delivery to a subject, counted only once JetStream has acked it.

Idempotency: every message carries ``Nats-Msg-Id: <delivery id>``. JetStream drops a message whose
id it has seen within the stream's duplicate window (default two minutes; set ``duplicate_window``
on the stream to cover your retry horizon), and still acks it, so a retry after a lost ack or a
replay within the window stores nothing new.

Failures::

    no stream captures the subject (no responders)    PermanentDeliveryError  create the stream, replay
    JetStream error 4xx (e.g. a wrong expected stream) PermanentDeliveryError
    JetStream error 5xx, no ack before the timeout     TransientDeliveryError
    cannot connect, connection lost or draining        TransientDeliveryError
    authorization refused, unreadable credentials      PermanentDeliveryError

Reasons name the subject and the error type, never a server URL (it may carry a user and password)
nor the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from pydantic import Field, SecretStr, field_validator, model_validator

from handlers._options import not_blank, placeholders
from receiver.delivery import (
    Delivery,
    DeliveryError,
    HandlerContext,
    HandlerOptions,
    PermanentDeliveryError,
    TransientDeliveryError,
)

log = logging.getLogger(__name__)

_PLACEHOLDERS = ("session_id", "status")
# A published subject: dot-separated tokens of printable characters, no wildcards.
_SUBJECT = re.compile(r"^[^.\s*>]+(\.[^.\s*>]+)*$")


class Options(HandlerOptions):
    """``type: nats`` (CONTRACT §3)."""

    type: Literal["nats"]
    servers: tuple[str, ...] = Field(default=("nats://127.0.0.1:4222",), min_length=1)
    subject: str = Field(default="kallglot.call.analysis.{status}", min_length=1, max_length=255)
    credentials: str | None = Field(default=None, min_length=1, description="path of a .creds file")
    token: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("servers")
    @classmethod
    def _nats_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for server in value:
            if not re.match(r"^(nats|tls|ws|wss)://\S+$", server):
                raise ValueError("servers must be nats://, tls://, ws:// or wss:// URLs")
        return value

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, value: str) -> str:
        used = placeholders(value, _PLACEHOLDERS, "subject")
        sample = value.format(**{name: "x" for name in used})
        if not _SUBJECT.match(sample):
            raise ValueError("subject must be dot-separated tokens without spaces or wildcards (* >)")
        return value

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else not_blank(value, "token")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Options:
        if self.credentials is not None and self.token is not None:
            raise ValueError("set credentials or token, not both")
        return self


def build(options: Options, context: HandlerContext) -> NatsHandler:
    return NatsHandler(options, context)


class NatsHandler:
    """The ``nats`` destination; owns one connection, opened on first use and reopened when lost."""

    def __init__(self, options: Options, context: HandlerContext) -> None:
        self.name = options.name
        self._options = options
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    def subject(self, delivery: Delivery) -> str:
        subject = self._options.subject.format(session_id=delivery.session_id, status=delivery.status)
        if not _SUBJECT.match(subject):
            raise PermanentDeliveryError(f"session id {delivery.session_id[:40]!r} makes an invalid subject")
        return subject

    async def deliver(self, delivery: Delivery) -> None:
        subject = self.subject(delivery)
        body = json.dumps(delivery.document, separators=(",", ":")).encode()
        headers = {"Nats-Msg-Id": delivery.id, "Content-Type": "application/json"}
        client = await self._connected()
        try:
            ack = await client.jetstream(timeout=self._options.timeout_seconds).publish(
                subject, body, headers=headers
            )
        except Exception as exc:
            raise _publish_error(exc, subject) from exc
        log.debug(
            "nats.published",
            extra={
                "handler": self.name,
                "delivery_id": delivery.id,
                "stream": ack.stream,
                "seq": ack.seq,
                "duplicate": bool(ack.duplicate),
            },
        )

    async def probe(self) -> None:
        subject = self._options.subject.format(session_id="probe", status="completed")
        client = await self._connected()
        try:
            await client.jetstream(timeout=self._options.timeout_seconds).find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError as exc:
            raise PermanentDeliveryError(f"no JetStream stream captures the subject {subject}") from exc
        except Exception as exc:
            raise _publish_error(exc, subject) from exc

    async def aclose(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None and not client.is_closed:
            await client.close()

    async def _connected(self) -> Client:
        async with self._lock:
            if self._client is not None and self._client.is_connected:
                return self._client
            if self._client is not None:
                await self._client.close()
                self._client = None
            self._client = await self._connect()
            return self._client

    async def _connect(self) -> Client:
        options = self._options
        extra: dict[str, Any] = {}
        if options.credentials is not None:
            if not os.access(options.credentials, os.R_OK):
                raise PermanentDeliveryError("the NATS credentials file cannot be read")
            extra["user_credentials"] = options.credentials
        if options.token is not None:
            extra["token"] = options.token.get_secret_value()
        try:
            async with asyncio.timeout(options.timeout_seconds * len(options.servers) + 1):
                return await nats.connect(
                    servers=list(options.servers),
                    name=f"kallglot-receiver/{self.name}",
                    connect_timeout=max(1, round(options.timeout_seconds)),
                    # One try per server: we reconnect on the next delivery, whose retry has its own
                    # backoff (nats-py's 0 would mean "try forever", even for the first connect).
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    dont_randomize=True,
                    error_cb=self._on_error,
                    **extra,
                )
        except (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError) as exc:
            raise PermanentDeliveryError(f"NATS refused the credentials ({type(exc).__name__})") from exc
        except Exception as exc:  # NoServersError, refused connections, timeouts: the server may come back
            raise TransientDeliveryError(f"cannot reach NATS ({type(exc).__name__})") from exc

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats.connection_error", extra={"handler": self.name, "error": type(exc).__name__})


def _publish_error(exc: Exception, subject: str) -> DeliveryError:
    """One error of our tree for whatever a JetStream call raised."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
        return PermanentDeliveryError(
            f"no JetStream stream captures the subject {subject}; create one, then replay"
        )
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.code or 0
        label = f"{code} {exc.err_code}" if exc.err_code else str(code)
        if code >= 500 or code in (408, 429):
            return TransientDeliveryError(f"JetStream answered {label} for {subject}")
        return PermanentDeliveryError(f"JetStream refused the message for {subject} ({label})")
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError):
        return TransientDeliveryError(f"no JetStream ack for {subject} in time")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PermanentDeliveryError(f"the document exceeds the server's max_payload ({subject})")
    return TransientDeliveryError(f"NATS publish failed ({type(exc).__name__})")
