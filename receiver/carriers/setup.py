"""Wires the telephony presets from the settings (called once by ``receiver.app``)."""

from __future__ import annotations

from collections.abc import Callable

from receiver.carriers.desk import Telephony, TelephonyConfig
from receiver.carriers.pbx import PbxConfig, compile_mapping
from receiver.carriers.telnyx import public_key
from receiver.metrics import Metrics
from receiver.settings import Settings
from receiver.store import Store
from receiver.usecases import AnalysisSettings, Sessions, Wakeups


def build(
    settings: Settings,
    *,
    store: Store,
    analysis: AnalysisSettings,
    sessions: Sessions,
    wakeups: Wakeups,
    metrics: Metrics,
    clock: Callable[[], float],
) -> tuple[Telephony, PbxConfig | None]:
    """The carriers' desk, and the PBX options of ``/events/call-ended`` (None: unchanged)."""

    def ends(preset: bool | None) -> bool:
        return settings.end_session if preset is None else preset

    desk = Telephony(
        TelephonyConfig(
            twilio_token=settings.twilio_auth_token.get_secret_value().strip()
            if settings.twilio_auth_token
            else None,
            telnyx_key=public_key(settings.telnyx_public_key) if settings.telnyx_public_key else None,
            public_url=settings.public_url,
            end_session={
                "twilio": ends(settings.twilio_end_session),
                "telnyx": ends(settings.telnyx_end_session),
            },
            settle_seconds=settings.call_settle_seconds,
            tolerance_seconds=settings.webhook_tolerance_seconds,
            retention_seconds=settings.retention_days * 86400,
        ),
        store=store,
        settings=analysis,
        sessions=sessions,
        wakeups=wakeups,
        metrics=metrics,
        clock=clock,
    )
    pbx = None
    if settings.call_ended_mapping is not None or settings.inbound_bearer_token is not None:
        pbx = PbxConfig(
            mapping=compile_mapping(settings.call_ended_mapping) if settings.call_ended_mapping else None,
            bearer_token=settings.inbound_bearer_token.get_secret_value().strip()
            if settings.inbound_bearer_token
            else None,
            secrets=[s.get_secret_value() for s in settings.inbound_secrets],
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )
    return desk, pbx
