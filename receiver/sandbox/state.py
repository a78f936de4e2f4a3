"""The sandbox's Kallglot organization: sessions, analyses, credits, budgets, counters; pure, injected clock.

Every method is synchronous and does no I/O, so each use case is atomic under asyncio and the
whole state machine can be tested by moving a fake clock.
"""

from __future__ import annotations

import base64
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import data, errors
from .config import SandboxConfig
from .idempotency import IdempotencyCache
from .ratelimit import FixedWindow, Quota

Clock = Callable[[], float]
AnalysisStatus = Literal["processing", "completed", "failed"]

SESSION_ID = re.compile(r"^sess_[A-Za-z0-9_-]{1,64}$")
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")
_OLD_NAMES = {"summary": "summary", "sentiment": "sentiment", "compliance": "compliance"}
_OLD_NAMES |= {"keywords": "topics", "performance": "quality"}
FAILURE_TEXT = "Analysis failed: the transcript could not be processed (sandbox-simulated failure)."


@dataclass(frozen=True, slots=True)
class Analysis:
    """One accepted analysis; its status follows from the clock alone."""

    id: str
    session_id: str
    profile: str
    include: tuple[str, ...]
    created_at: float
    completes_at: float
    fails: bool

    def status(self, now: float) -> AnalysisStatus:
        if now < self.completes_at:
            return "processing"
        return "failed" if self.fails else "completed"


class SandboxState:
    """One organization with one credit balance, one rate-limit window and one idempotency scope."""

    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.credits_used = 0
        self.sessions: dict[str, float] = {}
        self.analyses: dict[str, Analysis] = {}
        self.idempotency = IdempotencyCache()
        self.window = FixedWindow()
        self.analysis_window = FixedWindow()
        self.analysis_posts = 0
        self.charged_by_session: Counter[str] = Counter()
        self.requests_by_route: Counter[str] = Counter()
        self.status_counts: Counter[str] = Counter()

    # --- randomness and ids ---------------------------------------------------------------

    def chance(self, rate: float) -> bool:
        return rate > 0 and (rate >= 1 or self.rng.random() < rate)

    def new_id(self, prefix: str) -> str:
        """``prefix`` + a 26-character ULID (Crockford base32): time first, so ids sort by creation."""
        ms = int(self.clock() * 1000) & ((1 << 50) - 1)
        value = ((ms << 80) | self.rng.getrandbits(80)) << 6  # 130 bits, padded to 17 bytes
        return prefix + base64.b32encode(value.to_bytes(17, "big"))[:26].translate(_TO_CROCKFORD).decode()

    # --- authentication and budgets ---------------------------------------------------------

    def authenticate(self, key: str | None) -> None:
        expected = self.config.api_key
        if expected is not None:
            ok = key == expected
        else:
            ok = key is not None and key.startswith(("sk_test_", "sk_live_"))
        if not ok:
            raise errors.invalid_api_key()

    def admit(self, *, analysis_post: bool) -> Quota:
        """Spend one request from the window(s); the quota says whether it was allowed."""
        now, cfg = self.clock(), self.config
        window = cfg.rate_limit_window_seconds
        if analysis_post and cfg.analysis_rate_limit is not None:
            narrow = self.analysis_window.peek(now, cfg.analysis_rate_limit, window)
            if not narrow.allowed:
                return narrow
            wide = self.window.take(now, cfg.rate_limit, window)
            if not wide.allowed:
                return wide
            narrow = self.analysis_window.take(now, cfg.analysis_rate_limit, window)
            return narrow if narrow.remaining <= wide.remaining else wide
        return self.window.take(now, cfg.rate_limit, window)

    def credit_headers(self) -> dict[str, str]:
        return {
            "X-API-Credits-Remaining": str(self.credits_remaining),
            "X-API-Credits-Used": str(self.credits_used),
        }

    @property
    def credits_remaining(self) -> int:
        """The balance is the ``credits`` knob itself, so setting the knob (any way) tops it up."""
        return self.config.credits

    # --- sessions --------------------------------------------------------------------------

    def session(self, session_id: str) -> float:
        """The session's end time (when the sandbox first saw it); raise 404 for unknown ids."""
        if not SESSION_ID.match(session_id) or session_id in self.config.missing_sessions:
            raise errors.not_found("session")
        return self.sessions.setdefault(session_id, self.clock())

    def transcript_ready_at(self, session_id: str) -> float:
        return self.session(session_id) + self.config.transcript_delay_seconds

    # --- analyses --------------------------------------------------------------------------

    def start_analysis(self, session_id: str, profile: str, include: tuple[str, ...]) -> Analysis:
        """Check the four documented preconditions, then charge one credit and accept."""
        ready_at = self.transcript_ready_at(session_id)
        now, cfg = self.clock(), self.config
        if not cfg.organization_active:
            raise errors.organization_inactive()
        if self.credits_remaining < 1:
            raise errors.insufficient_credits()
        if now < ready_at:
            raise errors.transcript_not_ready(ready_at - now)
        prefix = "ana_" if cfg.result_shape == "old" else "anl_"
        analysis = Analysis(
            id=self.new_id(prefix),
            session_id=session_id,
            profile=profile,
            include=include,
            created_at=now,
            completes_at=now + cfg.analysis_latency_seconds,
            fails=self.chance(cfg.analysis_failure_rate),
        )
        self.analyses[analysis.id] = analysis
        self.config.credits -= 1
        self.credits_used += 1
        self.charged_by_session[session_id] += 1
        return analysis

    def analysis(self, analysis_id: str) -> Analysis:
        found = self.analyses.get(analysis_id)
        if found is None:
            raise errors.not_found("analysis")
        return found

    def render_created(self, a: Analysis) -> dict[str, Any]:
        """The 202 body of the analysis POST."""
        base = {"id": a.id, "object": "analysis", "session_id": a.session_id}
        if self.config.result_shape == "old":
            return base | {
                "status": "queued",
                "analyses": [_OLD_NAMES[name] for name in a.include],
                "language": "en",
                "created_at": data.iso(a.created_at),
                "estimated_completion": data.iso(a.completes_at),
            }
        return base | {"status": "processing", "profile": a.profile, "created_at": data.iso(a.created_at)}

    def render(self, a: Analysis, *, full: bool = True) -> dict[str, Any]:
        """The analysis object as ``GET /v1/analyses/{id}`` returns it now (or just its identity)."""
        status = a.status(self.clock())
        old = self.config.result_shape == "old"
        shown = "complete" if old and status == "completed" else status
        out: dict[str, Any] = {"id": a.id, "object": "analysis", "session_id": a.session_id, "status": shown}
        if not full:
            return out
        done = status != "processing"
        if old:
            out["analyses"] = [_OLD_NAMES[name] for name in a.include]
            out["language"] = "en"
            if status == "completed":
                out["results"] = data.old_results(a.session_id, a.include)
        else:
            out = {**out, "call_id": None, "profile": a.profile}
            out["status"] = status
            if status == "completed":
                out |= data.new_results(a.session_id, a.include)
        out["error"] = FAILURE_TEXT if status == "failed" else None
        out["created_at"] = data.iso(a.created_at)
        out["completed_at"] = data.iso(a.completes_at) if done else None
        return out

    # --- counters --------------------------------------------------------------------------

    def count(self, route: str, status: int) -> None:
        self.requests_by_route[route] += 1
        self.status_counts[str(status)] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "analysis_posts": self.analysis_posts,
            "analyses_created": len(self.analyses),
            "credits_charged": self.credits_used,
            "credits_remaining": self.credits_remaining,
            "charged_by_session": dict(self.charged_by_session),
            "requests_by_route": dict(self.requests_by_route),
            "status_counts": dict(self.status_counts),
        }
