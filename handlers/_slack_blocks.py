"""Slack Block Kit rendering: the built-in message, operator templates, links, Slack's limits.

Pure functions of a :class:`~receiver.delivery.Delivery`: no I/O. Every string that reaches Slack is
mrkdwn-escaped and cut to the limit of the block that holds it (counted in UTF-16 units, as Slack
counts), so a long or hostile analysis can never make Slack reject the message.
"""

from __future__ import annotations

import json
import logging
import string
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from handlers import _analysis as A
from handlers._options import http_url, placeholders
from receiver.delivery import Delivery

# The handler's logger, so that operators filter one name for everything Slack does.
log = logging.getLogger("handlers.slack")

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_HEADER_TEXT = 150
MAX_FALLBACK_TEXT = 4000
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


def require_http_url(value: str, option: str) -> None:
    http_url(value, option)


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
    used = placeholders(template, LINK_VARIABLES, "link_template")
    require_http_url(template.split("{", 1)[0] or template, "link_template")
    return used


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


def facts_of(delivery: Delivery, link: str | None) -> dict[str, str]:
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
    facts = facts_of(delivery, link)
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
