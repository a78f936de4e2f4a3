"""Which handlers get a result, and what each one sees: the §8 document, ``when`` and ``fields``.

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
from receiver.store import AnalysisResult
from receiver.store.keys import delivery_id

ENVELOPE = ("type", "id", "session_id")

log = logging.getLogger(__name__)


class RoutingError(ValueError):
    """A handler's ``when`` or ``fields`` is not valid."""


def document(
    session_id: str, handler: str, status: str, call: dict[str, Any], analysis: dict[str, Any]
) -> dict[str, Any]:
    """The CONTRACT §8 document for one (call, handler)."""
    return {
        "type": f"call.analysis.{status}",
        "id": delivery_id(session_id, handler),
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


class Route:
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
                raise RoutingError(f"'when' is not a valid JMESPath expression: {exc}") from None
        for path in options.fields or ():
            if not path or any(not part for part in path.split(".")):
                raise RoutingError(f"'fields' entry {path!r} is not a dotted path such as analysis.summary")

    def wants(self, doc: dict[str, Any], status: str) -> bool:
        if status not in self.events:
            return False
        if self._when is None:
            return True
        try:
            return bool(self._when.search(doc))
        except Exception as exc:
            # An expression that cannot be evaluated on this document (comparing a number to a
            # string, ceil() of a huge number, a deep path) means "no match", never a failed call:
            # an exception here would be a 500 on the webhook path and a call that never finishes
            # on the poll path.
            log.warning(
                "routing.when_failed",
                extra={"handler": self.name, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"},
            )
            return False


class Router:
    """Implements ``receiver.store.Router``: the handlers that must receive a result."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)

    def __call__(self, session_id: str, call: dict[str, Any], result: AnalysisResult) -> list[str]:
        status = "completed" if result.state is CallState.COMPLETED else "failed"
        names = []
        for route in self.routes:
            doc = document(session_id, route.name, status, call, result.analysis)
            if route.wants(doc, status):
                names.append(route.name)
        return names
