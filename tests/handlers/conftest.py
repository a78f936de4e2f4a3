"""Shared fixtures of the handler tests: documents in both analysis shapes, a context, servers."""

from __future__ import annotations

import copy
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# Until pytest's `pythonpath = ["."]` is set in pyproject, make `tests.fakes` importable.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from receiver.delivery import Delivery, HandlerContext  # noqa: E402
from tests.fakes import serve  # noqa: E402
from tests.fakes.debug_logs import debug_logs  # noqa: E402, F401  (autouse: every handler test logs at DEBUG)
from tests.fakes.slack_fake import SlackFake  # noqa: E402

CALL: dict[str, Any] = {
    "call_id": "CA123",
    "ended_at": "2026-03-26T11:04:20Z",
    "duration_seconds": 245.3,
    "direction": "inbound",
    "from": "+14155550100",
    "to": "+14155550199",
    "agent": {"id": "u_1", "email": "agent@example.com"},
    "metadata": {"crm_contact_id": "123"},
}

NEW_ANALYSIS: dict[str, Any] = {
    "id": "anl_01HDEF456789012",
    "object": "analysis",
    "session_id": "sess_01HXYZ123456789",
    "call_id": None,
    "profile": "default",
    "status": "completed",
    "summary": "Customer checked order status; agent confirmed the new ship date.",
    "sentiment": {
        "customer": "Neutral, slightly anxious early; satisfied after confirmation.",
        "agent": "Calm and solution-oriented throughout.",
    },
    "compliance": {"status": "ok", "flags": []},
    "performance": {"score": 0.86},
    "error": None,
    "created_at": "2026-03-26T11:10:00Z",
    "completed_at": "2026-03-26T11:10:22Z",
}

OLD_ANALYSIS: dict[str, Any] = {
    "id": "ana_01HDEF456789012",
    "object": "analysis",
    "session_id": "sess_01HXYZ123456789",
    "status": "complete",
    "results": {
        "sentiment": {"overall": 0.72, "label": "positive", "trend": "improving"},
        "summary": {
            "brief": "Order status checked; resolved.",
            "key_points": ["ship date"],
            "outcome": "resolved",
        },
        "quality": {"score": 85, "talk_ratio": {"agent": 55, "customer": 45}},
        "topics": [{"name": "order_status", "confidence": 0.95}],
    },
    "created_at": "2026-03-26T11:10:00Z",
}

FAILED_ANALYSIS: dict[str, Any] = {
    "id": "anl_01HFAILED00000",
    "object": "analysis",
    "session_id": "sess_01HXYZ123456789",
    "status": "failed",
    "error": "Transcript was empty.",
}

SHAPES = {"new": NEW_ANALYSIS, "old": OLD_ANALYSIS, "failed": FAILED_ANALYSIS}


def make_document(
    shape: str = "new", *, call: dict[str, Any] | None = None, **analysis: Any
) -> dict[str, Any]:
    """A CONTRACT §8 document; ``analysis`` keys override (``None`` deletes) the chosen shape's."""
    body = copy.deepcopy(SHAPES[shape])
    for key, value in analysis.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    kind = "call.analysis.failed" if shape == "failed" else "call.analysis.completed"
    return {
        "type": kind,
        "id": "dlv_0001",
        "session_id": body["session_id"],
        "call": copy.deepcopy(CALL) if call is None else call,
        "analysis": body,
    }


def make_delivery(document: dict[str, Any] | None = None, **overrides: Any) -> Delivery:
    """A delivery of ``document`` (default: the NEW shape) with stable ids."""
    document = make_document() if document is None else document
    analysis = document.get("analysis") or {}
    values: dict[str, Any] = {
        "id": document.get("id", "dlv_0001"),
        "handler": "test",
        "session_id": document.get("session_id", "sess_01HXYZ123456789"),
        "analysis_id": analysis.get("id"),
        "status": "failed" if document.get("type") == "call.analysis.failed" else "completed",
        "attempt": 1,
        "created_at": datetime(2026, 3, 26, 23, 59, 30, tzinfo=UTC),
        "document": document,
    }
    values.update(overrides)
    return Delivery(**values)


class CannedKallglot:
    """A ``KallglotReader`` answering from dicts; records what was asked."""

    def __init__(self, transcripts: dict[str, dict[str, Any]] | None = None) -> None:
        self.transcripts = transcripts or {}
        self.asked: list[str] = []

    async def get_session(self, session_id: str) -> dict[str, Any]:
        self.asked.append(session_id)
        return {"id": session_id, "object": "session", "status": "ended"}

    async def get_transcript(self, session_id: str) -> dict[str, Any]:
        self.asked.append(session_id)
        return self.transcripts[session_id]


class VirtualClock:
    """An injected clock whose ``sleep`` advances time instantly and records the delay."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(name="make_document")
def make_document_fixture() -> Callable[..., dict[str, Any]]:
    """``make_document(shape="new"|"old"|"failed", call=..., **analysis_overrides)``."""
    return make_document


@pytest.fixture(name="make_delivery")
def make_delivery_fixture() -> Callable[..., Delivery]:
    """``make_delivery(document=None, **delivery_field_overrides)``."""
    return make_delivery


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def kallglot() -> CannedKallglot:
    return CannedKallglot()


@pytest.fixture
def context(clock: VirtualClock, kallglot: CannedKallglot) -> HandlerContext:
    return HandlerContext(
        kallglot=kallglot, clock=clock, sleep=clock.sleep, user_agent="kallglot-receiver-test"
    )


@pytest.fixture
async def slack_fake() -> AsyncIterator[tuple[SlackFake, str]]:
    """A fake Slack on a free loopback port: ``(fake, base_url)``."""
    fake = SlackFake()
    async with serve(fake.app) as base_url:
        yield fake, base_url


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto S3 server for the session, with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
