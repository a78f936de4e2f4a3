"""Operator queries over calls, shared by every backend: filters, a cursor, and their SQL.

The SQL is written once with ``?`` parameters and a small dialect (how to read a field of the
call's JSON, how to number parameters); each backend runs what ``calls_sql`` builds. Listing is
newest first on ``(received_at, session_id)``, so a cursor is the last row's pair and every page
is an index range scan (migration 0004 adds the indexes).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from receiver.lifecycle import CallState, DeliveryState

MAX_LIMIT = 1000


class InvalidQuery(ValueError):
    """A filter that cannot be used (the message names it)."""


@dataclass(frozen=True)
class CallQuery:
    """Filters of ``GET /admin/calls`` (every one optional; all must hold)."""

    states: tuple[CallState, ...] = ()
    since: float | None = None
    until: float | None = None
    time_field: str = "received"  # or "finished"
    session_id: str | None = None
    phone: str | None = None
    handler: str | None = None
    delivery_state: DeliveryState | None = None
    reason: str | None = None
    limit: int = 50
    cursor: tuple[float, str] | None = None

    def as_json(self) -> dict[str, Any]:
        """The filters that are set, for the replay log."""
        out: dict[str, Any] = {}
        for name in ("since", "until", "session_id", "phone", "handler", "reason"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.states:
            out["state"] = [s.value for s in self.states]
        if self.delivery_state is not None:
            out["delivery_state"] = self.delivery_state.value
        if self.time_field != "received":
            out["time"] = self.time_field
        return out


def encode_cursor(received_at: float, session_id: str) -> str:
    raw = json.dumps([received_at, session_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        received_at, session_id = json.loads(raw)
        if isinstance(received_at, bool) or not isinstance(received_at, int | float):
            raise TypeError
        if not isinstance(session_id, str):
            raise TypeError
        return float(received_at), session_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidQuery("cursor is not one this service gave out") from None


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL."""

    name: str

    def field(self, column: str, key: str) -> str:
        if self.name == "postgres":
            return f"({column} ->> '{key}')"
        return f"json_extract({column}, '$.{key}')"

    def numbered(self, sql: str, first: int = 1) -> str:
        """``?`` -> ``$n`` for PostgreSQL (our SQL never uses ``?`` otherwise)."""
        if self.name != "postgres":
            return sql
        parts = sql.split("?")
        out = [parts[0]]
        for index, part in enumerate(parts[1:]):
            out.append(f"${first + index}{part}")
        return "".join(out)


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")


@dataclass
class Where:
    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"


def call_filter(query: CallQuery, dialect: Dialect, *, paged: bool = True) -> Where:
    """The WHERE of ``query`` over ``calls`` (alias ``c``)."""
    where = Where()
    if query.states:
        where.add(f"c.state IN ({','.join('?' * len(query.states))})", *(s.value for s in query.states))
    column = "c.finished_at" if query.time_field == "finished" else "c.received_at"
    if query.since is not None:
        where.add(f"{column} >= ?", query.since)
    if query.until is not None:
        where.add(f"{column} < ?", query.until)
    if query.session_id is not None:
        where.add("c.session_id = ?", query.session_id)
    if query.phone is not None:
        # Two index lookups (migration 0004's expression indexes): as an OR beside ORDER BY ... LIMIT
        # the planners would rather walk the whole table newest first.
        where.add(
            f"c.session_id IN (SELECT session_id FROM calls WHERE {dialect.field('call_json', 'from')} = ?"
            f" UNION SELECT session_id FROM calls WHERE {dialect.field('call_json', 'to')} = ?)",
            query.phone,
            query.phone,
        )
    if query.reason is not None:
        escaped = query.reason.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.add("c.reason IS NOT NULL AND lower(c.reason) LIKE ? ESCAPE '\\'", f"%{escaped.lower()}%")
    if query.handler is not None or query.delivery_state is not None:
        inner = ["d.session_id = c.session_id"]
        params: list[Any] = []
        if query.handler is not None:
            inner.append("d.handler = ?")
            params.append(query.handler)
        if query.delivery_state is not None:
            inner.append("d.state = ?")
            params.append(query.delivery_state.value)
        where.add(f"EXISTS (SELECT 1 FROM deliveries d WHERE {' AND '.join(inner)})", *params)
    if paged and query.cursor is not None:
        received_at, session_id = query.cursor
        # A row value, so that both planners walk the (received_at, session_id) index from there.
        where.add("(c.received_at, c.session_id) < (?, ?)", received_at, session_id)
    return where


def list_sql(query: CallQuery, dialect: Dialect, columns: str) -> tuple[str, list[Any]]:
    """One page (``limit + 1`` rows: the extra one says whether there is a next page)."""
    where = call_filter(query, dialect)
    sql = (
        f"SELECT {columns} FROM calls c WHERE {where.sql()}"
        " ORDER BY c.received_at DESC, c.session_id DESC LIMIT ?"
    )
    return dialect.numbered(sql), [*where.params, query.limit + 1]
