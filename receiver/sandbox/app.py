"""The ``Sandbox``: config, state and webhook dispatcher composed into one mountable Starlette app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import admin, api, data, errors
from .config import SandboxConfig
from .state import Analysis, SandboxState
from .webhooks import Delivery, WebhookDispatcher, encode_event


class Sandbox:
    """A local Kallglot; ``start``/``aclose`` are idempotent and also run by the app's own lifespan."""

    def __init__(
        self, config: SandboxConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.clock = clock
        self.state = SandboxState(self.config, clock)
        self.dispatcher = WebhookDispatcher(
            clock=clock,
            rng=lambda: self.state.rng,
            retry_scale=lambda: self.config.webhook_retry_scale,
            timeout=lambda: self.config.webhook_timeout_seconds,
        )
        self.webhooks_dropped = 0
        self.app = Starlette(
            routes=[*api.routes(self), *admin.routes(self)],
            exception_handlers={HTTPException: self._http_error},
            lifespan=self._lifespan,
        )

    async def start(self) -> None:
        await self.dispatcher.start()

    async def aclose(self) -> None:
        await self.dispatcher.aclose()

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = errors.ApiError(exc.status_code, "invalid_request_error", "not_found", "No such route.")
        if exc.status_code == 405:
            error = errors.ApiError(405, "invalid_request_error", "method_not_allowed", "Method not allowed.")
        request_id = self.state.new_id("req_")
        return JSONResponse(error.body(request_id), exc.status_code, {"X-Request-ID": request_id})

    # --- knobs and counters -----------------------------------------------------------------

    def update_config(self, patch: dict[str, Any]) -> None:
        """Apply a partial update atomically (pydantic ValidationError leaves everything as it was)."""
        merged = SandboxConfig.model_validate(self.config.model_dump() | patch)
        for name in patch:
            object.__setattr__(self.config, name, getattr(merged, name))
        if "seed" in patch:
            self.state.rng.seed(self.config.seed)

    def reset(self) -> None:
        """Forget sessions, analyses, keys, budgets, counters and pending webhooks; keep the knobs
        (the credit balance is a knob: it stays as it is)."""
        self.state.reset()
        self.dispatcher.clear()
        self.dispatcher.reset_counters()
        self.webhooks_dropped = 0

    def stats(self) -> dict[str, Any]:
        """Counters since start or reset (also ``GET /_sandbox/stats``).

        ``analysis_posts``: every analysis POST received, whatever its answer; ``analyses_created``
        and ``credits_charged``: accepted ones; ``requests_by_route`` / ``status_counts``: ``/v1``
        requests only. ``webhooks_sent``: deliveries whose first attempt went out (a duplicate counts
        twice); ``webhook_attempts`` = delivered + failed attempts; ``webhooks_pending``: waiting for
        an attempt or in one; ``webhooks_dropped``: analysis events the drop rate swallowed;
        ``webhooks_given_up``: deliveries that failed all 8 attempts.
        """
        d = self.dispatcher
        return self.state.stats() | {
            "webhooks_sent": d.sent,
            "webhooks_delivered": d.delivered,
            "webhooks_failed_attempts": d.failed_attempts,
            "webhooks_pending": d.pending,
            "webhook_attempts": d.attempts,
            "webhooks_given_up": d.given_up,
            "webhooks_dropped": self.webhooks_dropped,
        }

    # --- events -----------------------------------------------------------------------------

    def emit(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        droppable: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Send one event now to the configured URL (maybe dropped or doubled by the knobs);
        ``then`` runs after its first delivery attempt, or at once if nothing is sent."""
        cfg, state = self.config, self.state
        if cfg.webhook_url is None or (droppable and state.chance(cfg.webhook_drop_rate)):
            self.webhooks_dropped += cfg.webhook_url is not None
            if then is not None:
                then()
            return
        now = self.clock()
        event = {
            "id": state.new_id("evt_"),
            "type": type_,
            "api_version": "v1",
            "created_at": data.iso(now),
            "data": payload,
        }
        body = encode_event(event)
        for copy in range(2 if state.chance(cfg.webhook_duplicate_rate) else 1):
            delivery = Delivery(state.new_id("wh_del_"), cfg.webhook_url, cfg.webhook_secret, body, int(now))
            delivery.then = then if copy == 0 else None
            self.dispatcher.deliver(delivery)

    def analysis_started(self, analysis: Analysis) -> None:
        self.dispatcher.call_at(analysis.completes_at, lambda: self._analysis_finished(analysis))

    def _analysis_finished(self, analysis: Analysis) -> None:
        if self.state.analyses.get(analysis.id) is not analysis:
            return  # forgotten by a reset
        status = analysis.status(self.clock())
        payload = self.state.render(analysis, full=self.config.webhook_include_result)
        kind = "analysis.failed" if status == "failed" else "analysis.complete"
        self.emit(kind, payload, droppable=True)

    def provider(self, session_id: str) -> dict[str, Any] | None:
        """The carrier leg set for this session through the knobs (``session_providers``), if any."""
        leg = self.config.session_providers.get(session_id)
        return None if leg is None else leg.model_dump()

    def end_call(self, session_id: str) -> dict[str, Any]:
        """End the session (it already is) and announce ``session.ended``, then ``transcript.ready``."""
        state = self.state
        session = data.session_object(session_id, state.session(session_id), self.provider(session_id))
        transcript = {
            "id": f"trn_{session_id}",
            "object": "transcript",
            "session_id": session_id,
            "status": "completed",
        }
        ready_at = state.transcript_ready_at(session_id)

        def announce_transcript() -> None:
            self.dispatcher.call_at(ready_at, lambda: self.emit("transcript.ready", transcript))

        # transcript.ready waits for session.ended's first attempt, so that it really comes second
        self.emit("session.ended", session, then=announce_transcript)
        return session
