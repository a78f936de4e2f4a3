"""The handler interface: what a destination receives, what it may raise, how it is configured.

Every destination (``handlers/*.py``) is a module that exposes ``Options`` (a subclass of
:class:`HandlerOptions` with the type's own settings) and ``build(options, context) -> Handler``.
The receiver names built-ins by import string (``receiver.registry``) and never imports
``handlers`` directly, so a third-party destination is a module path away.

Failures are classified once, by the handler, into this tree::

    DeliveryError                 (reason: one line an operator understands; never a secret)
     ├── TransientDeliveryError   retry with capped, jittered backoff (retry_after honoured if set)
     │    └── RateLimitedError    the destination said "slow down"; retry after ``retry_after``
     └── PermanentDeliveryError   dead letter at once (bad credentials, missing bucket, …)

Anything else a handler raises counts as transient (and is reported to Sentry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

DeliveryEvent = Literal["completed", "failed"]


class DeliveryError(Exception):
    """A delivery did not go through."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class TransientDeliveryError(DeliveryError):
    """Worth retrying: timeouts, 5xx, connection errors."""


class RateLimitedError(TransientDeliveryError):
    """The destination asked us to slow down (429 or equivalent)."""


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help: goes to the dead letters with its reason."""


@dataclass(frozen=True)
class Delivery:
    """One (call, handler) delivery attempt.

    ``document`` is the CONTRACT §8 document already narrowed by the handler's ``fields``:
    ``{"type", "id", "session_id", "call", "analysis"}``. ``id`` is stable across retries and
    replays: destinations use it (or ``session_id``) as their idempotency key.
    """

    id: str
    handler: str
    session_id: str
    analysis_id: str | None
    status: DeliveryEvent
    attempt: int
    created_at: datetime
    document: dict[str, Any] = field(default_factory=dict)


class Handler(Protocol):
    """A destination. Implementations own their clients and close them in ``aclose``."""

    name: str

    async def deliver(self, delivery: Delivery) -> None:
        """Deliver once; raise a DeliveryError subclass on failure. Must be idempotent per id."""

    async def probe(self) -> None:
        """Check configuration and credentials with a harmless call; raise DeliveryError if not ok."""

    async def aclose(self) -> None:
        """Release connections."""


class KallglotReader(Protocol):
    """The read-only Kallglot calls a handler may make (enrichment, transcripts)."""

    async def get_session(self, session_id: str) -> dict[str, Any]: ...

    async def get_transcript(self, session_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HandlerContext:
    """What the composition root hands to every handler factory."""

    kallglot: KallglotReader
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    user_agent: str = "kallglot-receiver"


class RetryPolicy(BaseModel):
    """When a failing delivery is tried again, and when it is given up (dead-lettered)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_seconds: float = Field(default=2.0, gt=0)
    max_seconds: float = Field(default=600.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    horizon_seconds: float = Field(default=86400.0, gt=0, description="dead-letter after this long")
    max_attempts: int | None = Field(default=None, ge=1)


class CircuitPolicy(BaseModel):
    """Stop hammering a failing destination; probe it after ``open_seconds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    open_seconds: float = Field(default=30.0, gt=0)


class HandlerOptions(BaseModel):
    """The options every handler type shares (CONTRACT §3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str
    events: tuple[DeliveryEvent, ...] = ("completed",)
    when: str | None = None
    fields: tuple[str, ...] | None = None
    retry: RetryPolicy = RetryPolicy()
    circuit: CircuitPolicy = CircuitPolicy()
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    concurrency: int = Field(default=4, ge=1, le=64)
    enrich: bool = Field(
        default=False,
        description="fill missing call fields (phone number, metadata) from GET /v1/sessions/{id}",
    )

    @field_validator("events")
    @classmethod
    def _events_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("events must name at least one of: completed, failed")
        return value
