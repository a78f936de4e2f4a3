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
import json
import logging
import string
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from handlers import _analysis as A
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

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_HEADER_TEXT = 150
MAX_FALLBACK_TEXT = 4000
CHANNEL_INTERVAL_SECONDS = 1.0  # Slack allows about one message per second per channel
ELLIPSIS = "…"

TEMPLATE_VARIABLES = frozenset(
    {
        "title", "summary", "status", "error", "session_id", "analysis_id", "delivery_id",
        "call_id", "direction", "from", "to", "customer_phone", "duration", "agent_email",
        "sentiment_customer", "sentiment_agent", "sentiment_label", "sentiment_score",
        "compliance_status", "compliance_flags", "score", "link",
    }
)  # fmt: skip
LINK_VARIABLES = frozenset(
    {
        "session_id", "analysis_id", "delivery_id", "call_id", "direction", "from", "to",
        "phone_number", "customer_phone", "agent_id", "agent_email",
    }
)  # fmt: skip
_OK_COMPLIANCE = frozenset({"ok", "pass", "passed", "compliant"})
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
        _require_http_url(value, "api_url")
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
            _require_http_url(self.webhook_url.get_secret_value(), "webhook_url")
        return self


def _require_http_url(value: str, option: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"{option} must be an http(s) URL")


# --- rendering ------------------------------------------------------------------------------------


def _units(text: str) -> int:
    """Length as Slack counts it (UTF-16 code units), so astral emoji count double."""
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` UTF-16 units with a trailing ellipsis, never inside a character,
    a combining sequence, an emoji ZWJ sequence or a ``&amp;``-style escape."""
    if _units(text) <= limit:
        return text
    budget, used, end = limit - _units(ELLIPSIS), 0, 0
    for end, char in enumerate(text):  # noqa: B007
        used += 2 if ord(char) > 0xFFFF else 1
        if used > budget:
            break
    while end > 0 and (
        unicodedata.combining(text[end]) or text[end] in "\u200d\ufe0e\ufe0f" or text[end - 1] == "\u200d"
    ):
        end -= 1
    cut = text[:end]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp < 6:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def check_link_template(template: str) -> frozenset[str]:
    """Validate a ``str.format``-style link template; return the placeholders it uses."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"link_template is not a valid format string: {exc}") from None
    used: set[str] = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in LINK_VARIABLES:
            raise ValueError(
                f"link_template placeholder {{{field}}} is unknown; use {', '.join(sorted(LINK_VARIABLES))}"
            )
        if spec or conversion:
            raise ValueError(f"link_template placeholder {{{field}}} may not carry a format spec")
        used.add(field)
    _require_http_url(template.split("{", 1)[0] or template, "link_template")
    return frozenset(used)


def _sub(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def link_values(delivery: Delivery) -> dict[str, str]:
    """The values a link template may use; absent ones are left out."""
    document = delivery.document
    call = _sub(document, "call")
    agent = _sub(call, "agent")
    candidates: dict[str, object] = {
        "session_id": delivery.session_id,
        "analysis_id": delivery.analysis_id,
        "delivery_id": delivery.id,
        "call_id": call.get("call_id"),
        "direction": call.get("direction"),
        "from": call.get("from"),
        "to": call.get("to"),
        "phone_number": call.get("phone_number"),
        "customer_phone": A.customer_phone(call),
        "agent_id": agent.get("id"),
        "agent_email": agent.get("email"),
    }
    return {key: str(value) for key, value in candidates.items() if isinstance(value, str | int) and value}


def render_link(template: str, delivery: Delivery) -> str | None:
    """Fill the link template with URL-quoted values; ``None`` when a placeholder has no value."""
    values = link_values(delivery)
    missing = check_link_template(template) - values.keys()
    if missing:
        log.info(
            "slack.link_skipped",
            extra={"delivery_id": delivery.id, "missing": sorted(missing)},
        )
        return None
    return template.format_map({key: quote(value, safe="") for key, value in values.items()})


def _facts(delivery: Delivery, link: str | None) -> dict[str, str]:
    """Every template variable as display text (mrkdwn-escaped), empty when unknown."""
    document = delivery.document
    analysis = _sub(document, "analysis")
    call = _sub(document, "call")
    agent = _sub(call, "agent")
    feeling = A.sentiment(analysis)
    comp_status, flags = A.compliance(analysis)
    score = A.score(analysis)
    raw: dict[str, object] = {
        "title": A.title(document),
        "summary": A.summary(analysis),
        "status": "failed" if A.is_failed(document) else (A.status(analysis) or delivery.status),
        "error": A.error(analysis),
        "session_id": delivery.session_id,
        "analysis_id": delivery.analysis_id or analysis.get("id"),
        "delivery_id": delivery.id,
        "call_id": call.get("call_id"),
        "direction": call.get("direction"),
        "from": call.get("from"),
        "to": call.get("to"),
        "customer_phone": A.customer_phone(call),
        "duration": A.duration(call.get("duration_seconds")),
        "agent_email": agent.get("email"),
        "sentiment_customer": feeling.get("customer"),
        "sentiment_agent": feeling.get("agent"),
        "sentiment_label": feeling.get("label"),
        "sentiment_score": feeling.get("score"),
        "compliance_status": comp_status,
        "compliance_flags": "; ".join(flags),
        "score": f"{score * 100:.0f}%" if score is not None else None,
        "link": link,
    }
    return {key: escape(str(value)) if value else "" for key, value in raw.items()}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT)}}


def _bullets(heading: str, lines: list[str]) -> str:
    """A heading and bullet lines that fit one section, ending with ``…and N more`` if cut."""
    text = heading
    for index, line in enumerate(lines):
        more = f"\n…and {len(lines) - index} more"
        candidate = f"{text}\n• {line}"
        if _units(candidate) + _units(more) > MAX_SECTION_TEXT and index < len(lines) - 1:
            return text + more
        text = candidate
    return text


def render_default(delivery: Delivery, link: str | None) -> dict[str, Any]:
    """The built-in message: ``{"text": fallback, "blocks": [...]}`` within Slack's limits."""
    facts = _facts(delivery, link)
    document = delivery.document
    analysis = _sub(document, "analysis")
    failed = A.is_failed(document)
    comp_status, flags = A.compliance(analysis)
    alert = comp_status is not None and comp_status not in _OK_COMPLIANCE
    icon = ":x:" if failed else ":warning:" if alert else ":telephone_receiver:"
    header = A.title(document)

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{icon} {header}", "emoji": True}}
    ]
    if alert:
        count = f"{len(flags)} flag{'s' if len(flags) != 1 else ''}" if flags else "no flags listed"
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f":rotating_light: *Compliance `{facts['compliance_status']}`*: "
                        f"{count}, needs review",
                    }
                ],
            }
        )
    fields = [
        f"*{label}*\n{facts[key]}"
        for label, key in (
            ("Direction", "direction"),
            ("Duration", "duration"),
            ("From", "from"),
            ("To", "to"),
            ("Agent", "agent_email"),
            ("Score", "score"),
        )
        if facts[key]
    ]
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": field} for field in fields]})
    if failed:
        blocks.append(_section(f"*Analysis failed*\n{facts['error'] or 'Kallglot gave no reason.'}"))
    if facts["summary"]:
        blocks.append(_section(f"*Summary*\n{facts['summary']}"))
    feelings = [
        f"*{label}:* {facts[key]}"
        for label, key in (("Customer", "sentiment_customer"), ("Agent", "sentiment_agent"))
        if facts[key]
    ]
    if facts["sentiment_label"] or facts["sentiment_score"]:
        overall = facts["sentiment_label"] or "score"
        if facts["sentiment_score"]:
            overall += f" ({facts['sentiment_score']})"
        feelings.append(f"*Overall:* {overall}")
    if feelings:
        blocks.append(_section(_bullets("*Sentiment*", feelings)))
    if comp_status is not None or flags:
        mark = ":warning:" if alert else ":white_check_mark:"
        heading = f"*Compliance:* {mark} `{facts['compliance_status'] or 'unknown'}`"
        blocks.append(_section(_bullets(heading, [escape(flag) for flag in flags])))
    if link:
        blocks.append(_section(f"<{link}|View the analysis in Kallglot>"))
    ids = [f"Session `{facts['session_id']}`"]
    if facts["analysis_id"]:
        ids.append(f"Analysis `{facts['analysis_id']}`")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(ids)}]})

    return {"text": fallback_text(facts, alert), "blocks": fit_blocks(blocks)}


def fallback_text(facts: Mapping[str, str], alert: bool) -> str:
    """The notification / screen-reader text (``text``), at most 4000 characters."""
    lines = [facts["title"]]
    if alert:
        lines.append(
            f":warning: Compliance {facts['compliance_status']}: {facts['compliance_flags']}".rstrip(": ")
        )
    body = facts["error"] if facts["status"] == "failed" else facts["summary"]
    if body:
        lines.append(body)
    return truncate("\n".join(lines), MAX_FALLBACK_TEXT)


def fit_blocks(blocks: list[Any]) -> list[Any]:
    """Apply Slack's per-block limits to any blocks (ours or a template's)."""
    fitted: list[Any] = []
    for block in blocks[:MAX_BLOCKS]:
        if not isinstance(block, dict):
            fitted.append(block)
            continue
        block = dict(block)
        kind = block.get("type")
        text = block.get("text")
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            limit = MAX_HEADER_TEXT if kind == "header" else MAX_SECTION_TEXT
            block["text"] = {**text, "text": truncate(text["text"], limit)}
        if isinstance(block.get("fields"), list):
            block["fields"] = [_fit_text(field, MAX_FIELD_TEXT) for field in block["fields"][:MAX_FIELDS]]
        if kind == "context" and isinstance(block.get("elements"), list):
            elements = block["elements"][:MAX_CONTEXT_ELEMENTS]
            block["elements"] = [_fit_text(element, MAX_SECTION_TEXT) for element in elements]
        fitted.append(block)
    return fitted


def _fit_text(obj: Any, limit: int) -> Any:
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return {**obj, "text": truncate(obj["text"], limit)}
    return obj


class MessageTemplate:
    """An operator's message: Block Kit JSON whose strings hold ``${variable}`` placeholders.

    The JSON is parsed once and placeholders are filled inside each string of the parsed tree, so
    a value can never break the JSON. Accepted forms: ``{"text": "...", "blocks": [...]}`` (either
    key may be omitted, not both) or a bare list of blocks.
    """

    def __init__(self, tree: dict[str, Any]) -> None:
        self._tree = tree

    @classmethod
    def parse(cls, source: str) -> MessageTemplate:
        try:
            tree = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ValueError(f"template is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
        if isinstance(tree, list):
            tree = {"blocks": tree}
        if not isinstance(tree, dict) or not ({"text", "blocks"} & tree.keys()):
            raise ValueError(
                'template must be a JSON object with "text" and/or "blocks", or a list of blocks'
            )
        if extra := tree.keys() - {"text", "blocks"}:
            raise ValueError(f"template has unknown keys: {', '.join(sorted(extra))}")
        if "text" in tree and not isinstance(tree["text"], str):
            raise ValueError('template "text" must be a string')
        if "blocks" in tree and not (
            isinstance(tree["blocks"], list)
            and all(isinstance(b, dict) and "type" in b for b in tree["blocks"])
        ):
            raise ValueError('template "blocks" must be a list of objects with a "type"')
        if len(tree.get("blocks", [])) > MAX_BLOCKS:
            raise ValueError(f"template has more than {MAX_BLOCKS} blocks")
        _walk(tree, _check_placeholders)
        return cls(tree)

    def render(self, facts: Mapping[str, str]) -> dict[str, Any]:
        filled: dict[str, Any] = _walk(self._tree, lambda text: string.Template(text).substitute(facts))
        if "blocks" in filled:
            filled["blocks"] = fit_blocks(filled["blocks"])
        filled["text"] = truncate(filled.get("text") or facts["title"], MAX_FALLBACK_TEXT)
        return filled


def _check_placeholders(text: str) -> str:
    template = string.Template(text)
    if not template.is_valid():
        raise ValueError(f"template string {text[:40]!r} has a malformed placeholder; write $$ for a dollar")
    if unknown := set(template.get_identifiers()) - TEMPLATE_VARIABLES:
        raise ValueError(
            f"template placeholder(s) {', '.join(sorted(unknown))} unknown; "
            f"use {', '.join(sorted(TEMPLATE_VARIABLES))}"
        )
    return text


def _walk(node: Any, on_string: Callable[[str], str]) -> Any:
    if isinstance(node, str):
        return on_string(node)
    if isinstance(node, list):
        return [_walk(item, on_string) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, on_string) for key, value in node.items()}
    return node


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


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def classify(status: int | None, error: str | None, headers: Mapping[str, Any] | None) -> Exception:
    """Turn Slack's answer (HTTP status and error code) into our delivery error."""
    code = (error or "").strip()[:100] or f"HTTP {status}"
    if status == 429 or code == "ratelimited" or code == "rate_limited":
        return RateLimitedError("slack: rate limited", retry_after=_retry_after(headers))
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
            return self._template.render(_facts(delivery, link))
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
                raise classify(response.status_code, response.body, response.headers)
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
            raise classify(status, error, getattr(response, "headers", None)) from exc
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
