"""The use cases, each a small object with explicit dependencies that owns its claims from the store.

``Intake`` accepts a verified event; ``Starting`` starts due analyses (once: one credit);
``Following`` records results from webhooks and polls overdue analyses; ``Delivering`` hands
finished calls to the handlers. Routes hand verified events to ``Intake``; each loop in
``receiver.workers`` asks its use case for due work and runs it. ``receiver.app`` wires them.
Everything that matters is in the store, so a crash at any line loses nothing and a retry repeats
nothing that cost money.
"""

from receiver.usecases.common import (
    KALLGLOT,
    TELEPHONY,
    AnalysisSettings,
    Attempts,
    Results,
    Sessions,
    Wakeups,
)
from receiver.usecases.delivering import Delivering, Outcome
from receiver.usecases.following import Following
from receiver.usecases.intake import Intake
from receiver.usecases.starting import Starting

__all__ = [
    "KALLGLOT",
    "TELEPHONY",
    "AnalysisSettings",
    "Attempts",
    "Delivering",
    "Following",
    "Intake",
    "Outcome",
    "Results",
    "Sessions",
    "Starting",
    "Wakeups",
]
