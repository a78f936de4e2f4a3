"""The slack handler: options, rendering within Slack's limits, and delivery against a fake Slack."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import ValidationError

from handlers import _slack_blocks as slack_blocks
from handlers import slack
from receiver.delivery import (
    Delivery,
    HandlerContext,
    PermanentDeliveryError,
    RateLimitedError,
    TransientDeliveryError,
)
from tests.fakes.slack_fake import HOOK_PATH, TOKEN, SlackFake

SlackServer = tuple[SlackFake, str]
MakeDocument = Callable[..., dict[str, Any]]
MakeDelivery = Callable[..., Delivery]


def options(**values: Any) -> slack.Options:
    base: dict[str, Any] = {"name": "calls", "type": "slack"}
    if "token" not in values and "webhook_url" not in values:
        base["webhook_url"] = "https://hooks.slack.com/services/T/B/x"
    return slack.Options.model_validate(base | values)


def webhook_handler(server: SlackServer, context: HandlerContext, **values: Any) -> slack.SlackHandler:
    _, base_url = server
    return slack.build(options(webhook_url=base_url + HOOK_PATH, **values), context)


def api_handler(server: SlackServer, context: HandlerContext, **values: Any) -> slack.SlackHandler:
    _, base_url = server
    values = {"token": TOKEN, "channel": "C0CALLS", "api_url": base_url + "/api/"} | values
    return slack.build(options(**values), context)


def texts(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"webhook_url": "https://hooks.slack.com/services/T/B/x"}, id="webhook"),
        pytest.param({"token": "xoxb-1", "channel": "C0CALLS"}, id="token-and-channel"),
        pytest.param(
            {"link_template": "https://app.kallglot.com/sessions/{session_id}?a={analysis_id}"}, id="link"
        ),
        pytest.param({"template": '{"text": "${title}: ${summary}"}'}, id="plain-text-template"),
        pytest.param(
            {"template": '[{"type": "section", "text": {"type": "mrkdwn", "text": "$summary"}}]'}, id="blocks"
        ),
    ],
)
def test_valid_options_are_accepted(values: dict[str, Any]) -> None:
    options(**values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"webhook_url": None}, "set either webhook_url", id="no-destination"),
        pytest.param({"token": "xoxb-1", "webhook_url": "https://h/s"}, "set either", id="both-destinations"),
        pytest.param({"token": "xoxb-1"}, "token needs a channel", id="token-without-channel"),
        pytest.param({"channel": "C1"}, "channel is fixed", id="webhook-with-channel"),
        pytest.param({"webhook_url": "hooks.slack.com/x"}, "http(s) URL", id="webhook-not-url"),
        pytest.param({"colour": "red"}, "Extra inputs", id="unknown-option"),
        pytest.param({"link_template": "https://x/{secret}"}, "unknown", id="link-unknown-placeholder"),
        pytest.param({"link_template": "https://x/{session_id.__class__}"}, "unknown", id="link-attribute"),
        pytest.param({"link_template": "https://x/{session_id!r}"}, "format spec", id="link-conversion"),
        pytest.param({"link_template": "https://x/{session_id"}, "not a valid format", id="link-malformed"),
        pytest.param({"link_template": "javascript:{session_id}"}, "http(s) URL", id="link-not-http"),
        pytest.param({"template": "Call ${summary}"}, "not valid JSON", id="template-not-json"),
        pytest.param(
            {"template": '{"text": "${token}"}'}, "token unknown", id="template-unknown-placeholder"
        ),
        pytest.param(
            {"template": '{"text": "costs $5"}'}, "malformed placeholder", id="template-bare-dollar"
        ),
        pytest.param({"template": '{"text": "x", "icon": "y"}'}, "unknown keys", id="template-extra-key"),
        pytest.param({"template": '"just a string"'}, "JSON object", id="template-not-object"),
        pytest.param(
            {"template": json.dumps([{"type": "divider"}] * 51)}, "more than 50", id="template-too-many"
        ),
        pytest.param({"template": '{"blocks": [{"text": "x"}]}'}, '"type"', id="template-block-without-type"),
    ],
)
def test_invalid_options_are_rejected_with_a_reason(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options(**values)


def test_secrets_never_print() -> None:
    hook = options(webhook_url="https://hooks.slack.com/services/T/B/very-secret")
    token = options(token="xoxb-very-secret", channel="C1")
    assert "very-secret" not in repr(hook) + str(hook) + repr(token) + hook.model_dump_json()


# --- rendering ----------------------------------------------------------------------------------


def test_new_shape_renders_call_summary_sentiment_compliance_score(make_delivery: MakeDelivery) -> None:
    message = slack_blocks.render_default(make_delivery(), link=None)
    blocks = message["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == ":telephone_receiver: Call analysis: inbound call from +14155550100"
    body = texts(message)
    for expected in ("*Direction*\\ninbound", "4m 05s", "+14155550199", "agent@example.com", "86%"):
        assert expected in body
    assert "Customer checked order status" in body
    assert "*Customer:* Neutral, slightly anxious" in body
    assert ":white_check_mark: `ok`" in body
    assert ":rotating_light:" not in body
    assert message["text"].startswith("Call analysis: inbound call from +14155550100\nCustomer checked")


def test_old_shape_renders_brief_label_and_percent_score(
    make_document: MakeDocument, make_delivery: MakeDelivery
) -> None:
    body = texts(slack_blocks.render_default(make_delivery(make_document("old")), link=None))
    assert "Order status checked; resolved." in body
    assert "*Overall:* positive (0.72)" in body
    assert "85%" in body


def test_compliance_problem_is_prominent(make_document: MakeDocument, make_delivery: MakeDelivery) -> None:
    flags = ["Recording disclosure missing", {"description": "Card number read aloud", "severity": "high"}]
    delivery = make_delivery(make_document(compliance={"status": "violation", "flags": flags}))
    message = slack_blocks.render_default(delivery, link=None)
    header, alert = message["blocks"][0], message["blocks"][1]
    assert header["text"]["text"].startswith(":warning: ")
    assert alert["type"] == "context"
    assert "*Compliance `violation`*: 2 flags, needs review" in alert["elements"][0]["text"]
    assert "• Card number read aloud (high)" in texts(message)
    assert (
        "Compliance violation: Recording disclosure missing; Card number read aloud (high)" in message["text"]
    )


def test_failed_analysis_renders_its_error(make_document: MakeDocument, make_delivery: MakeDelivery) -> None:
    message = slack_blocks.render_default(make_delivery(make_document("failed")), link=None)
    assert message["blocks"][0]["text"]["text"].startswith(":x: Call analysis failed: ")
    assert "*Analysis failed*\\nTranscript was empty." in texts(message)
    assert message["text"].endswith("Transcript was empty.")


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({}, id="empty"),
        pytest.param({"type": "call.analysis.completed", "session_id": "sess_1"}, id="no-call-no-analysis"),
        pytest.param({"analysis": {"summary": 42, "compliance": "ok", "sentiment": []}}, id="odd-types"),
        pytest.param({"call": {"direction": "outbound", "to": "+1"}, "analysis": {}}, id="narrowed"),
    ],
)
def test_any_part_of_the_document_may_be_missing(
    document: dict[str, Any], make_delivery: MakeDelivery
) -> None:
    message = slack_blocks.render_default(
        make_delivery(document, session_id="sess_1", analysis_id=None), link=None
    )
    assert message["blocks"][0]["type"] == "header"
    assert message["text"]


def test_long_texts_are_cut_to_slacks_limits(
    make_document: MakeDocument, make_delivery: MakeDelivery
) -> None:
    summary = "word " * 2000
    flags = [f"flag number {i} " + "x" * 40 for i in range(500)]
    call = {"direction": "inbound", "from": "+1" + "9" * 300}
    document = make_document(call=call, summary=summary, compliance={"status": "warning", "flags": flags})
    message = slack_blocks.render_default(make_delivery(document), link=None)
    blocks = message["blocks"]
    assert len(blocks) <= slack_blocks.MAX_BLOCKS
    assert len(blocks[0]["text"]["text"]) <= slack_blocks.MAX_HEADER_TEXT
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert all(len(text) <= slack_blocks.MAX_SECTION_TEXT for text in sections)
    assert any(text.startswith("*Summary*") and text.endswith("…") for text in sections)
    assert any(text.startswith("*Compliance:*") and "…and " in text for text in sections)
    assert len(message["text"]) <= slack_blocks.MAX_FALLBACK_TEXT
    assert message["text"].endswith("…")


def test_user_text_is_escaped_for_mrkdwn(make_document: MakeDocument, make_delivery: MakeDelivery) -> None:
    delivery = make_delivery(make_document(summary="<!channel> Tom & Jerry <https://evil|click>"))
    body = texts(slack_blocks.render_default(delivery, link=None))
    assert "&lt;!channel&gt; Tom &amp; Jerry &lt;https://evil|click&gt;" in body
    assert "<!channel>" not in body


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("short", 10, "short", id="fits"),
        pytest.param("abcdefghij", 5, "abcd…", id="ascii"),
        pytest.param("ab😀😀", 4, "ab…", id="astral-emoji-counts-two"),
        pytest.param("abcde\u0301f", 6, "abcd…", id="keeps-combining-mark-with-base"),
        pytest.param("ab &amp; cd", 6, "ab…", id="does-not-split-escape"),
        pytest.param("ab 👩\u200d💻 cd", 6, "ab…", id="does-not-split-zwj-sequence"),
    ],
)
def test_truncate(text: str, limit: int, expected: str) -> None:
    assert slack_blocks.truncate(text, limit) == expected


def test_fit_blocks_caps_block_count_fields_and_texts() -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 5000}}] * 60
    blocks[0] = {"type": "section", "fields": [{"type": "mrkdwn", "text": "y" * 3000}] * 12}
    fitted = slack_blocks.fit_blocks(blocks)
    assert len(fitted) == 50
    assert len(fitted[0]["fields"]) == 10
    assert all(len(f["text"]) == slack_blocks.MAX_FIELD_TEXT for f in fitted[0]["fields"])
    assert len(fitted[1]["text"]["text"]) == slack_blocks.MAX_SECTION_TEXT


def test_template_fills_placeholders_inside_json_strings(
    make_document: MakeDocument, make_delivery: MakeDelivery
) -> None:
    template = json.dumps(
        {
            "text": "${title}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*${compliance_status}* ${summary}"}}
            ],
        }
    )
    delivery = make_delivery(make_document(summary='He said "hi" \\ left', compliance={"status": "ok"}))
    message = slack_blocks.MessageTemplate.parse(template).render(slack_blocks.facts_of(delivery, None))
    assert message["text"] == "Call analysis: inbound call from +14155550100"
    assert message["blocks"][0]["text"]["text"] == '*ok* He said "hi" \\ left'


def test_link_template_quotes_values_and_skips_when_a_value_is_missing(
    make_document: MakeDocument, make_delivery: MakeDelivery
) -> None:
    template = "https://app.example.com/s/{session_id}?from={from}&a={analysis_id}"
    delivery = make_delivery(make_document(call={"from": "+1 415/x"}))
    assert slack_blocks.render_link(template, delivery) == (
        "https://app.example.com/s/sess_01HXYZ123456789?from=%2B1%20415%2Fx&a=anl_01HDEF456789012"
    )
    assert slack_blocks.render_link(template, make_delivery(make_document(call={}))) is None


# --- delivery -----------------------------------------------------------------------------------


async def test_webhook_posts_the_rendered_message(
    slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    handler = webhook_handler(slack_fake, context, link_template="https://k.example/{session_id}")
    delivery = make_delivery()
    await handler.deliver(delivery)
    await handler.aclose()
    [sent] = fake.messages("webhook")
    assert sent == handler.render(delivery)
    assert "<https://k.example/sess_01HXYZ123456789|View the analysis in Kallglot>" in texts(sent)


async def test_token_mode_posts_to_the_channel_with_a_bearer_token(
    slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    handler = api_handler(slack_fake, context)
    await handler.deliver(make_delivery())
    await handler.aclose()
    [received] = fake.received
    assert received.path == "chat.postMessage"
    assert received.headers["authorization"] == f"Bearer {TOKEN}"
    assert received.body["channel"] == "C0CALLS"
    assert received.body["blocks"][0]["type"] == "header"


async def test_messages_to_one_channel_are_paced(
    slack_fake: SlackServer, context: HandlerContext, clock: Any, make_delivery: MakeDelivery
) -> None:
    handler = api_handler(slack_fake, context)
    for _ in range(3):
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert clock.sleeps == [1.0, 1.0]


async def test_429_is_rate_limited_with_retry_after_and_defers_the_channel(
    slack_fake: SlackServer, context: HandlerContext, clock: Any, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    fake.fail_api("ratelimited", status=429, headers={"Retry-After": "7"})
    handler = api_handler(slack_fake, context)
    with pytest.raises(RateLimitedError) as caught:
        await handler.deliver(make_delivery())
    assert caught.value.retry_after == 7.0
    await handler.deliver(make_delivery())
    await handler.aclose()
    assert clock.sleeps == [7.0]


async def test_webhook_429_is_rate_limited(
    slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    fake.fail_hook("rate_limited", status=429, headers={"Retry-After": "3"})
    handler = webhook_handler(slack_fake, context)
    with pytest.raises(RateLimitedError) as caught:
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert caught.value.retry_after == 3.0


async def test_retry_after_as_an_http_date_is_honoured(
    slack_fake: SlackServer, context: HandlerContext, clock: Any, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    when = format_datetime(datetime.fromtimestamp(clock() + 30, UTC), usegmt=True)
    fake.fail_hook("rate_limited", status=429, headers={"Retry-After": when})
    handler = webhook_handler(slack_fake, context)
    with pytest.raises(RateLimitedError) as caught:
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(
    "error",
    [
        "invalid_auth",
        "channel_not_found",
        "not_in_channel",
        "account_inactive",
        "token_revoked",
        "is_archived",
    ],
)
async def test_api_errors_are_permanent_and_named(
    error: str, slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    fake.fail_api(error)
    handler = api_handler(slack_fake, context)
    with pytest.raises(PermanentDeliveryError) as caught:
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert error in caught.value.reason
    assert TOKEN not in caught.value.reason


async def test_a_wrong_token_is_permanent(
    slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    handler = api_handler(slack_fake, context, token="xoxb-wrong")
    with pytest.raises(PermanentDeliveryError, match="invalid_auth"):
        await handler.deliver(make_delivery())
    await handler.aclose()


@pytest.mark.parametrize(
    "error", ["invalid_token", "channel_not_found", "channel_is_archived", "action_prohibited"]
)
async def test_webhook_errors_are_permanent_and_never_show_the_url(
    error: str, slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    fake.fail_hook(error)
    handler = webhook_handler(slack_fake, context)
    with pytest.raises(PermanentDeliveryError) as caught:
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert error in caught.value.reason
    assert "secretpart" not in caught.value.reason


async def test_unknown_webhook_is_no_service(
    slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    _, base_url = slack_fake
    handler = slack.build(options(webhook_url=base_url + "/services/T/B/gone"), context)
    with pytest.raises(PermanentDeliveryError, match="no_service"):
        await handler.deliver(make_delivery())
    await handler.aclose()


@pytest.mark.parametrize("mode", ["api", "webhook"])
async def test_server_errors_are_transient(
    mode: str, slack_fake: SlackServer, context: HandlerContext, make_delivery: MakeDelivery
) -> None:
    fake, _ = slack_fake
    if mode == "api":
        fake.fail_api(status=500)
        handler = api_handler(slack_fake, context)
    else:
        fake.fail_hook("rollup_error")
        handler = webhook_handler(slack_fake, context)
    with pytest.raises(TransientDeliveryError) as caught:
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert not isinstance(caught.value, RateLimitedError)


async def test_connection_refused_is_transient(context: HandlerContext, make_delivery: MakeDelivery) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = slack.build(options(webhook_url=f"http://127.0.0.1:{port}/services/T/B/secret"), context)
    with pytest.raises(TransientDeliveryError) as caught:
        await handler.deliver(make_delivery())
    await handler.aclose()
    assert "secret" not in caught.value.reason


async def test_probe_calls_auth_test(slack_fake: SlackServer, context: HandlerContext) -> None:
    fake, _ = slack_fake
    handler = api_handler(slack_fake, context)
    await handler.probe()
    bad = api_handler(slack_fake, context, token="xoxb-wrong")
    with pytest.raises(PermanentDeliveryError, match="invalid_auth"):
        await bad.probe()
    await handler.aclose()
    await bad.aclose()
    assert [r.path for r in fake.received] == ["auth.test", "auth.test"]


async def test_probe_in_webhook_mode_posts_nothing(slack_fake: SlackServer, context: HandlerContext) -> None:
    fake, _ = slack_fake
    handler = webhook_handler(slack_fake, context)
    await handler.probe()
    await handler.aclose()
    assert fake.received == []
