"""SQL of issue 8's store operations on PostgreSQL (kept apart from the hot-path SQL)."""

from __future__ import annotations

from receiver import lifecycle
from receiver.lifecycle import ANALYSED, CallState, DeliveryState, sql_in, sql_value
from receiver.store.postgres_sql import DONE, MARK_STARTED, TO_START

OPERABLE = sql_in(*lifecycle.OPERABLE)

_REMEMBER_FROM = """
INSERT INTO analysed_sessions (session_id, analysis_key, analysis_id, analysed_at)
SELECT session_id, analysis_key, analysis_id, {now} FROM {source} WHERE {where} AND analysis_id IS NOT NULL
ON CONFLICT DO NOTHING
"""

#: mark_started, and the session remembered as analysed in the same statement.
MARK_STARTED_REMEMBERED = (
    f"WITH upd AS ({MARK_STARTED.strip()} RETURNING session_id, analysis_key, analysis_id)"
    + _REMEMBER_FROM.format(now="$4", source="upd", where="true")
)
REMEMBER = _REMEMBER_FROM.format(now="$2", source="calls", where="session_id = $1")
REMEMBER_BY_ANALYSIS = _REMEMBER_FROM.format(now="$2", source="calls", where="analysis_id = $1")

# Retention reads the call's updated_at: dead-lettering renews it.
DEAD_LETTER = f"""
WITH d AS (
    UPDATE deliveries SET state = {sql_value(DeliveryState.DEAD)}, attempts = attempts + 1, last_error = $2, dead_at = $3,
        lease_owner = NULL, lease_until = NULL
    WHERE id = $1 AND state = {sql_value(DeliveryState.PENDING)} RETURNING session_id
)
UPDATE calls SET updated_at = $3 WHERE session_id IN (SELECT session_id FROM d)
"""

RENEW_START_LEASE = f"""
UPDATE calls SET lease_until = $3 WHERE session_id = $1 AND lease_owner = $2 AND state IN {TO_START}
"""

REMEMBERED = (
    "SELECT session_id, analysis_key, analysis_id, analysed_at FROM analysed_sessions WHERE session_id = $1"
)

FORGET = """
WITH gone AS (
    DELETE FROM analysed_sessions WHERE session_id IN (
        SELECT session_id FROM analysed_sessions a WHERE analysed_at < $1
          AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.session_id = a.session_id)
        LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT count(*) FROM gone
"""

ORPHAN = f"""
WITH gone AS (
    UPDATE deliveries SET state = {sql_value(DeliveryState.ORPHANED)}, lease_owner = NULL, lease_until = NULL
    WHERE state = {sql_value(DeliveryState.PENDING)} AND NOT (handler = ANY($1::text[])) RETURNING session_id
), back AS (
    UPDATE deliveries SET state = {sql_value(DeliveryState.PENDING)}, next_at = $2
    WHERE state = {sql_value(DeliveryState.ORPHANED)} AND handler = ANY($1::text[]) RETURNING session_id
), touched AS (
    UPDATE calls SET updated_at = $2
    WHERE session_id IN (SELECT session_id FROM gone UNION SELECT session_id FROM back)
)
SELECT (SELECT count(*) FROM gone) AS gone, (SELECT count(*) FROM back) AS back
"""

ORPHANED_COUNTS = f"SELECT handler, count(*) AS n FROM deliveries WHERE state = {sql_value(DeliveryState.ORPHANED)} GROUP BY handler"

LOCK_OPERABLE = f"""
SELECT d.id, d.session_id, d.handler, d.status, d.created_at, d.replays FROM deliveries d
JOIN calls c ON c.session_id = d.session_id
WHERE d.id = ANY($1::text[]) AND d.state IN {OPERABLE}
ORDER BY d.session_id FOR UPDATE OF c, d
"""

DELETE_DELIVERIES = "DELETE FROM deliveries WHERE id = ANY($1::text[])"

REPEND = f"""
UPDATE deliveries SET state = {sql_value(DeliveryState.PENDING)}, attempts = 0, next_at = $2, dead_at = NULL, first_attempt_at = NULL,
    replays = replays + 1, lease_owner = NULL, lease_until = NULL
WHERE id = $1
"""

INSERT_MOVED = f"""
INSERT INTO deliveries (id, session_id, handler, status, state, created_at, next_at, replays)
VALUES ($1, $2, $3, $4, {sql_value(DeliveryState.PENDING)}, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1
"""

# The calls touched by an operator action: renewed for retention, and delivered when nothing
# undelivered is left.
SETTLE = f"""
UPDATE calls SET updated_at = $2,
    state = CASE WHEN state IN {sql_in(*ANALYSED)} AND NOT EXISTS (SELECT 1 FROM deliveries x
        WHERE x.session_id = calls.session_id AND x.state NOT IN {DONE}) THEN {sql_value(CallState.DELIVERED)} ELSE state END,
    delivered_at = CASE WHEN state IN {sql_in(*ANALYSED)} AND NOT EXISTS (SELECT 1 FROM deliveries x
        WHERE x.session_id = calls.session_id AND x.state NOT IN {DONE}) THEN $2 ELSE delivered_at END
WHERE session_id = ANY($1::text[])
"""
