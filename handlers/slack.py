"""Slack: post each call analysis as a Block Kit message (incoming webhook or ``chat.postMessage``).

Slack delivery is at-least-once: Slack has no idempotency key for messages, so a retry after a
lost response, or a dead-letter replay, posts the message again.

Failures are classified once per attempt:

- 429 / ``ratelimited`` -> :class:`RateLimitedError` with Slack's ``Retry-After``;
- bad credentials, unknown or archived channel, revoked tokens, rejected payloads, any other 4xx
  or ``ok: false`` error -> :class:`PermanentDeliveryError` naming Slack's error code;
- 5xx, Slack's ``internal_error``/``fatal_error``/``service_unavailable``, timeouts, connection
  errors -> :class:`TransientDeliveryError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from handlers import _http
from handlers._slack_blocks import (
    MessageTemplate,
    check_link_template,
    facts_of,
    render_default,
    render_link,
    require_http_url,
)
from receiver.delivery import (
    Delivery,
    HandlerContext,
    HandlerOptions,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)

log = logging.getLogger(__name__)
# slack-sdk logs request headers (the bearer token) and the webhook URL at DEBUG whenever its
# logger's own level is NOTSET; a dedicated logger pinned at INFO keeps secrets out of the logs.
_sdk_log = logging.getLogger(f"{__name__}.sdk")
_sdk_log.setLevel(logging.INFO)

CHANNEL_INTERVAL_SECONDS = 1.0  # Slack allows about one message per second per channel
_TRANSIENT_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})


class Options(HandlerOptions):
    """``webhook_url``, or ``token`` + ``channel``; optional ``link_template`` and ``template``."""

    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = Field(default=None, min_length=1, max_length=80)
    api_url: str = "https://slack.com/api/"
    link_template: str | None = None
    template: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("api_url")
    @classmethod
    def _api_url_is_http(cls, value: str) -> str:
        require_http_url(value, "api_url")
        return value if value.endswith("/") else value + "/"

    @field_validator("link_template")
    @classmethod
    def _link_template_is_valid(cls, value: str | None) -> str | None:
        if value is not None:
            check_link_template(value)
        return value

    @field_validator("template")
    @classmethod
    def _template_is_valid(cls, value: str | None) -> str | None:
        if value is not None:
            MessageTemplate.parse(value)
        return value

    @model_validator(mode="after")
    def _one_destination(self) -> Options:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set either webhook_url, or token and channel")
        if self.token is not None and not self.channel:
            raise ValueError("token needs a channel")
        if self.webhook_url is not None:
            if self.channel:
                raise ValueError("channel is fixed by the webhook_url; remove channel")
            require_http_url(self.webhook_url.get_secret_value(), "webhook_url")
        return self


# --- delivery ------------------------------------------------------------------------------------


class ChannelPacer:
    """Space messages to one channel ``interval`` seconds apart; a 429 pushes the next slot out."""

    def __init__(
        self, interval: float, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self._interval, self._clock, self._sleep = interval, clock, sleep
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, channel: str) -> None:
        async with self._locks.setdefault(channel, asyncio.Lock()):
            delay = self._next.get(channel, 0.0) - self._clock()
            if delay > 0:
                await self._sleep(delay)
            self._next[channel] = self._clock() + self._interval

    def defer(self, channel: str, seconds: float) -> None:
        self._next[channel] = max(self._next.get(channel, 0.0), self._clock() + seconds)


def classify(
    status: int | None, error: str | None, headers: Mapping[str, Any] | None, now: float | None = None
) -> Exception:
    """Turn Slack's answer (HTTP status and error code) into our delivery error; ``now`` dates an
    HTTP-date ``Retry-After`` (default: the wall clock)."""
    code = (error or "").strip()[:100] or f"HTTP {status}"
    if status == 429 or code == "ratelimited" or code == "rate_limited":
        wait = _http.retry_after(headers, time.time() if now is None else now)
        return RateLimitedError("slack: rate limited", retry_after=wait)
    if (status is not None and status >= 500) or code in _TRANSIENT_ERRORS:
        return TransientDeliveryError(f"slack: server error ({code})")
    return PermanentDeliveryError(f"slack rejected the message: {code}")


class SlackHandler:
    """One Slack destination; owns its aiohttp session and channel pacer."""

    def __init__(self, options: Options, context: HandlerContext) -> None:
        self.name = options.name
        self._options = options
        self._context = context
        self._template = MessageTemplate.parse(options.template) if options.template else None
        self._pacer = ChannelPacer(CHANNEL_INTERVAL_SECONDS, context.clock, context.sleep)
        self._session: aiohttp.ClientSession | None = None

    def render(self, delivery: Delivery) -> dict[str, Any]:
        """The message body (``text`` and ``blocks``) this handler posts for ``delivery``."""
        template = self._options.link_template
        link = render_link(template, delivery) if template else None
        if self._template is not None:
            return self._template.render(facts_of(delivery, link))
        return render_default(delivery, link)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self._options.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def _web(self) -> AsyncWebClient:
        assert self._options.token is not None
        return AsyncWebClient(
            token=self._options.token.get_secret_value(),
            base_url=self._options.api_url,
            timeout=max(1, round(self._options.timeout_seconds)),
            session=self._http(),
            user_agent_prefix=self._context.user_agent,
            logger=_sdk_log,
            retry_handlers=[],  # one attempt per deliver(): the core owns retries
        )

    async def deliver(self, delivery: Delivery) -> None:
        message = self.render(delivery)
        channel = self._options.channel or "webhook"
        await self._pacer.wait(channel)
        try:
            await self._call(lambda: self._send(message))
        except RateLimitedError as exc:
            self._pacer.defer(channel, exc.retry_after or CHANNEL_INTERVAL_SECONDS)
            raise
        log.info("slack.delivered", extra={"handler": self.name, "delivery_id": delivery.id})

    async def _send(self, message: dict[str, Any]) -> None:
        if self._options.webhook_url is not None:
            hook = AsyncWebhookClient(
                url=self._options.webhook_url.get_secret_value(),
                timeout=max(1, round(self._options.timeout_seconds)),
                session=self._http(),
                user_agent_prefix=self._context.user_agent,
                logger=_sdk_log,
                retry_handlers=[],
            )
            response = await hook.send_dict(message)
            if not 200 <= response.status_code < 300:
                raise classify(response.status_code, response.body, response.headers, self._context.clock())
            return
        await self._web().chat_postMessage(
            channel=self._options.channel or "",
            text=message.get("text", ""),
            blocks=message.get("blocks"),
            unfurl_links=False,
            unfurl_media=False,
        )

    async def _call(self, operation: Callable[[], Awaitable[None]]) -> None:
        """Run one Slack call, translating every foreign failure into our error tree."""
        try:
            await operation()
        except SlackApiError as exc:
            response = exc.response
            data = getattr(response, "data", None)
            error = data.get("error") if isinstance(data, dict) else None
            status = getattr(response, "status_code", None) or getattr(response, "status", None)
            raise classify(status, error, getattr(response, "headers", None), self._context.clock()) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # str(exc) may hold the webhook URL (a secret): name only the kind of failure.
            raise TransientDeliveryError(f"slack: {type(exc).__name__} talking to Slack") from exc
        except SlackClientError as exc:
            raise PermanentDeliveryError(f"slack: client misconfigured ({type(exc).__name__})") from exc

    async def probe(self) -> None:
        if self._options.webhook_url is not None:
            log.info(
                "slack.probe_skipped",
                extra={
                    "handler": self.name,
                    "reason": "an incoming webhook cannot be probed without posting",
                },
            )
            return

        async def auth_test() -> None:
            await self._web().auth_test()

        await self._call(auth_test)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build(options: Options, context: HandlerContext) -> SlackHandler:
    """Create the Slack handler (no I/O until the first delivery or probe)."""
    return SlackHandler(options, context)
