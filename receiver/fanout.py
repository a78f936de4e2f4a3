"""Fan-out: which handlers get a result and what each one sees (``events``, ``when``, ``fields``).

A finished call gets one delivery per handler subscribed to its event (``events``: completed,
failed); ``when`` is evaluated at delivery time, by the delivering use case, never inside a store
transaction: a delivery whose ``when`` does not match ends ``filtered``.

``when`` is a JMESPath expression (https://jmespath.org) evaluated on the delivery document; the
handler gets the result when it is truthy, for example ``analysis.compliance.status != 'ok'``.
JMESPath is a standard, side-effect-free query language: no code runs, whatever the expression.
``fields`` lists dotted paths (``analysis.summary``, ``call``) kept in the document; the envelope
(``type``, ``id``, ``session_id``) is always kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from receiver.delivery import HandlerOptions
from receiver.lifecycle import CallState

ENVELOPE = ("type", "id", "session_id")

log = logging.getLogger(__name__)


class SubscriptionError(ValueError):
    """A handler's ``when`` or ``fields`` is not valid."""


def document(
    delivery_id: str, session_id: str, status: str, call: dict[str, Any], analysis: dict[str, Any]
) -> dict[str, Any]:
    """The CONTRACT §8 document of one delivery (its id is the stored delivery's)."""
    return {
        "type": f"call.analysis.{status}",
        "id": delivery_id,
        "session_id": session_id,
        "call": call,
        "analysis": analysis,
    }


def narrow(doc: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """Keep only ``fields`` (dotted paths) and the envelope."""
    if fields is None:
        return doc
    out: dict[str, Any] = {key: doc[key] for key in ENVELOPE if key in doc}
    for path in fields:
        parts = path.split(".")
        source: Any = doc
        for part in parts:
            if not isinstance(source, dict) or part not in source:
                source = _MISSING
                break
            source = source[part]
        if source is _MISSING:
            continue
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = source
    return out


_MISSING = object()


class Subscription:
    """One handler's subscription: its events and its compiled ``when``."""

    def __init__(self, options: HandlerOptions) -> None:
        self.options = options
        self.name = options.name
        self.events = frozenset(options.events)
        self.fields = options.fields
        self._when: ParsedResult | None = None
        if options.when:
            try:
                self._when = jmespath.compile(options.when)
            except jmespath.exceptions.JMESPathError as exc:
                raise SubscriptionError(f"'when' is not a valid JMESPath expression: {exc}") from None
        for path in options.fields or ():
            if not path or any(not part for part in path.split(".")):
                raise SubscriptionError(
                    f"'fields' entry {path!r} is not a dotted path such as analysis.summary"
                )

    def receives(self, status: str) -> bool:
        """Subscribed to this event (``completed`` or ``failed``)."""
        return status in self.events

    def matches(self, doc: dict[str, Any]) -> bool:
        """``when`` holds for this document (always, without one)."""
        if self._when is None:
            return True
        try:
            return bool(self._when.search(doc))
        except Exception as exc:
            # An expression that cannot be evaluated on this document (comparing a number to a
            # string, ceil() of a huge number, a deep path) means "no match", never a failed
            # delivery: retrying would evaluate it the same way.
            log.warning(  # the event keeps its name from before the module was renamed (stable logs)
                "routing.when_failed",
                extra={"handler": self.name, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            return False


def event(state: CallState) -> str:
    """The delivery event of a finished call's state: ``completed`` or ``failed``."""
    return "completed" if state is CallState.COMPLETED else "failed"


def subscribers(subscriptions: Sequence[Subscription], state: CallState) -> list[str]:
    """The handlers that get a delivery of a call finished in ``state`` (their ``when`` is
    evaluated later, at delivery time)."""
    status = event(state)
    return [s.name for s in subscriptions if s.receives(status)]
