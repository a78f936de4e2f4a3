"""The sandbox's knobs: one mutable pydantic model with safe defaults, changed by PATCH or CLI."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEV_WEBHOOK_SECRET = "ksb_dev_webhook_secret"  # noqa: S105 (documented, for development only)
"""The documented development secret that signs sandbox webhooks unless another one is given."""

DEV_API_KEY = "sk_test_sandbox"
"""A key the sandbox always accepts when no ``api_key`` is configured."""


def _fraction() -> Any:
    return Field(default=0.0, ge=0.0, le=1.0)


class SessionProvider(BaseModel):
    """A session's carrier leg as Kallglot's session object names it (the ``provider`` object of the
    documented OLD shape, ``{type, phone_number, status, call_sid}``; Telnyx legs carry ``call_control_id``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["twilio", "telnyx", "sip"] = "twilio"
    call_sid: str | None = Field(default=None, min_length=1, max_length=200)
    call_control_id: str | None = Field(default=None, min_length=1, max_length=200)
    phone_number: str | None = Field(default=None, max_length=32)
    status: str = Field(default="completed", max_length=32)


class SandboxConfig(BaseModel):
    """Everything that makes the sandbox behave like a good or a bad day at Kallglot."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    webhook_url: str | None = None
    """Where signed webhooks go; None sends none."""
    webhook_secret: str = Field(default=DEV_WEBHOOK_SECRET, min_length=1)
    api_key: str | None = None
    """None accepts any ``sk_test_``/``sk_live_`` key; otherwise only this exact key."""
    credits: int = Field(default=1000, ge=0)
    """The live credit balance: each accepted analysis POST takes one; setting it tops up."""
    organization_active: bool = True
    rate_limit: int = Field(default=600, ge=1)
    """Requests per window over all API routes."""
    analysis_rate_limit: int | None = Field(default=None, ge=1)
    """Optional tighter budget for ``POST /v1/sessions/{id}/analysis`` in the same window."""
    rate_limit_window_seconds: float = Field(default=60.0, gt=0)
    analysis_latency_seconds: float = Field(default=2.0, ge=0)
    analysis_failure_rate: float = _fraction()
    transcript_delay_seconds: float = Field(default=0.0, ge=0)
    error_rate: float = _fraction()
    error_after_effect_rate: float = _fraction()
    response_delay_seconds: float = Field(default=0.0, ge=0)
    webhook_drop_rate: float = _fraction()
    webhook_duplicate_rate: float = _fraction()
    webhook_include_result: bool = True
    webhook_retry_scale: float = Field(default=1.0, ge=0)
    webhook_timeout_seconds: float = Field(default=30.0, gt=0)
    """Kallglot waits 30 s for a 2xx; tests may shorten it."""
    result_shape: Literal["new", "old"] = "new"
    missing_sessions: list[str] = Field(default_factory=list)
    session_providers: dict[str, SessionProvider] = Field(default_factory=dict)
    """Session id -> its carrier leg: ``GET /v1/sessions/{id}`` and ``session.ended`` then carry a
    ``provider`` object with the carrier's call id instead of the plain ``"twilio"`` string."""
    seed: int | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return value
