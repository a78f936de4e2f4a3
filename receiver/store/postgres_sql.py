"""The PostgreSQL store's SQL, kept as data: ``$n`` parameters, one statement per round trip."""

from __future__ import annotations

from receiver import lifecycle
from receiver.lifecycle import CallState, DeliveryState, sql_in, sql_value
from receiver.store.rows import CALL_COLUMNS, DELIVERY_COLUMNS

TO_START = sql_in(*lifecycle.TO_START)
IN_FLIGHT = sql_in(*lifecycle.IN_FLIGHT)
PRUNABLE = sql_in(*lifecycle.PRUNABLE)
#: Delivery states that keep a call from retention, from ``receiver.lifecycle`` (the one source).
UNDELIVERED = sql_in(*lifecycle.UNDELIVERED)
ANALYSED = sql_in(*lifecycle.ANALYSED)
#: Delivery states that are done (delivered, filtered): a call with only these is delivered.
DONE = sql_in(*lifecycle.DONE)

# --- SQL, kept as data: $n parameters, one statement per round trip ------------------------------

ACCEPT_CALL = f"""
WITH ev AS (
    INSERT INTO inbound_events (source, event_id, type, session_id, received_at)
    VALUES ($1, $2, $3, $4, $8) ON CONFLICT DO NOTHING RETURNING 1
), upsert AS (
    INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, received_at, next_at, updated_at,
                       analysis_profile, analysis_include)
    SELECT $4, {sql_value(CallState.RECEIVED)}, $5::jsonb, $6, $7, $8, $8, $8, $11, $12 WHERE EXISTS (SELECT 1 FROM ev)
        -- a session analysed before (its call row may be pruned since) is never created again
        AND (NOT EXISTS (SELECT 1 FROM analysed_sessions WHERE session_id = $4)
             OR EXISTS (SELECT 1 FROM calls WHERE session_id = $4))
    ON CONFLICT (session_id) DO UPDATE SET
        call_json = receiver_merge_patch(calls.call_json, EXCLUDED.call_json),
        end_session = calls.end_session OR EXCLUDED.end_session,
        updated_at = EXCLUDED.updated_at
    RETURNING (xmax = 0) AS inserted
)
SELECT EXISTS (SELECT 1 FROM ev) AS fresh, (SELECT inserted FROM upsert) AS inserted,
       CASE WHEN (SELECT inserted FROM upsert) THEN pg_notify($9, $10) END
"""

RECORD_EVENT = """
INSERT INTO inbound_events (source, event_id, type, session_id, received_at)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1
"""

# The call to finish, locked (two results racing serialise here); by analysis id when no session id.
LOCK_FOR_FINISH = """
SELECT session_id, state, analysis_id, webhook_seen, started_at FROM calls
WHERE session_id = coalesce($1::text, (SELECT session_id FROM calls WHERE analysis_id = $2 LIMIT 1))
FOR UPDATE
"""

FINISH = f"""
WITH upd AS (
    UPDATE calls SET state = $2, analysis_id = coalesce(analysis_id, $3), analysis_json = $4::jsonb,
        reason = $5, finished_at = $6, finished_via = $7, delivered_at = $8,
        started_at = coalesce(started_at, $6), lease_owner = NULL, lease_until = NULL, updated_at = $6
    WHERE session_id = $1
), ins AS (
    INSERT INTO deliveries (id, session_id, handler, status, state, created_at, next_at)
    SELECT d.id, $1, d.handler, $9, {sql_value(DeliveryState.PENDING)}, $6, $6
    FROM unnest($10::text[], $11::text[]) AS d (id, handler)
    ON CONFLICT DO NOTHING
)
SELECT CASE WHEN cardinality($10::text[]) > 0 THEN pg_notify($12, $13) END
"""

REQUEST_FETCH = f"""
WITH ev AS (
    INSERT INTO inbound_events (source, event_id, type, session_id, received_at)
    VALUES ($1, $2, $3, $4, $6) ON CONFLICT DO NOTHING RETURNING 1
), upd AS (
    UPDATE calls SET webhook_seen = true, next_at = $6, analysis_id = coalesce(analysis_id, $5),
        updated_at = $6,
        state = CASE WHEN state IN {TO_START} THEN {sql_value(CallState.PROCESSING)} ELSE state END,
        started_at = CASE WHEN state IN {TO_START} THEN coalesce(started_at, $6) ELSE started_at END,
        lease_owner = CASE WHEN state IN {TO_START} THEN NULL ELSE lease_owner END,
        lease_until = CASE WHEN state IN {TO_START} THEN NULL ELSE lease_until END
    WHERE session_id = coalesce($4::text, (SELECT session_id FROM calls WHERE analysis_id = $5 LIMIT 1))
      AND EXISTS (SELECT 1 FROM ev)
      AND state IN {sql_in(*lifecycle.TO_START, *lifecycle.IN_FLIGHT)}
      AND (analysis_id IS NULL OR analysis_id = $5)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM ev) AS fresh, EXISTS (SELECT 1 FROM upd) AS changed,
       CASE WHEN EXISTS (SELECT 1 FROM upd) THEN pg_notify($7, $8) END
"""

CLAIM_START = f"""
WITH picked AS MATERIALIZED (
    SELECT session_id FROM calls
    WHERE state IN {TO_START} AND next_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
    ORDER BY next_at LIMIT $4 FOR UPDATE SKIP LOCKED
)
UPDATE calls c SET state = {sql_value(CallState.STARTING)}, lease_owner = $1, lease_until = $2, attempts = c.attempts + 1,
    updated_at = $3
FROM picked WHERE c.session_id = picked.session_id
RETURNING {", ".join("c." + col.strip() for col in CALL_COLUMNS.split(","))}
"""

MARK_STARTED = f"""
UPDATE calls SET analysis_id = coalesce(analysis_id, $2), started_at = coalesce(started_at, $4),
    updated_at = $4,
    state = CASE WHEN state IN {TO_START} THEN {sql_value(CallState.PROCESSING)} ELSE state END,
    next_at = CASE WHEN state NOT IN {TO_START} THEN next_at WHEN webhook_seen THEN $4 ELSE $3 END,
    reason = CASE WHEN state IN {TO_START} THEN NULL ELSE reason END,
    lease_owner = CASE WHEN state IN {TO_START} THEN NULL ELSE lease_owner END,
    lease_until = CASE WHEN state IN {TO_START} THEN NULL ELSE lease_until END
WHERE session_id = $1
"""

MARK_SESSION_ENDED = "UPDATE calls SET end_session = false, updated_at = $2 WHERE session_id = $1"

RETRY_CALL = f"""
UPDATE calls SET next_at = $2, reason = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4
WHERE session_id = $1 AND state IN {TO_START}
"""

SKIP_CALL = f"""
UPDATE calls SET state = {sql_value(CallState.SKIPPED)}, reason = $2, finished_at = $3, lease_owner = NULL,
    lease_until = NULL, updated_at = $3
WHERE session_id = $1 AND state IN {TO_START}
"""

CLAIM_POLL = f"""
WITH picked AS MATERIALIZED (
    SELECT session_id FROM calls
    WHERE state IN {IN_FLIGHT} AND next_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
    ORDER BY next_at LIMIT $4 FOR UPDATE SKIP LOCKED
)
UPDATE calls c SET lease_owner = $1, lease_until = $2, polls = c.polls + 1
FROM picked WHERE c.session_id = picked.session_id
RETURNING {", ".join("c." + col.strip() for col in CALL_COLUMNS.split(","))}
"""

SCHEDULE_POLL = f"""
UPDATE calls SET next_at = $2, lease_owner = NULL, lease_until = NULL, updated_at = $3,
    state = CASE WHEN $4 AND state = {sql_value(CallState.PROCESSING)} THEN {sql_value(CallState.STALE)} ELSE state END
WHERE session_id = $1 AND state IN {IN_FLIGHT}
"""

CLAIM_DELIVERIES = f"""
WITH picked AS MATERIALIZED (
    SELECT id FROM deliveries
    WHERE handler = $4 AND state = {sql_value(DeliveryState.PENDING)} AND next_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
    ORDER BY next_at LIMIT $5 FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d SET lease_owner = $1, lease_until = $2, first_attempt_at = coalesce(d.first_attempt_at, $3)
FROM picked, calls c
WHERE d.id = picked.id AND c.session_id = d.session_id
RETURNING {", ".join("d." + col.strip() for col in DELIVERY_COLUMNS.split(","))},
    c.call_json, c.analysis_json, c.analysis_id AS call_analysis_id, c.received_at AS call_received_at
"""

# Locks the call row so that the last of several handlers to finish always sees the others done.
LOCK_CALL_OF_DELIVERY = """
SELECT c.session_id FROM deliveries d JOIN calls c ON c.session_id = d.session_id
WHERE d.id = $1 FOR UPDATE OF c
"""


def _settle(state: DeliveryState, columns: str) -> str:
    """Params: delivery id, now. A pending delivery moves to ``state`` (setting ``columns`` too),
    and its call to ``delivered`` when no other delivery of the call is left undone."""
    return f"""
WITH d AS (
    UPDATE deliveries SET state = {sql_value(state)}, {columns}lease_owner = NULL, lease_until = NULL
    WHERE id = $1 AND state = {sql_value(DeliveryState.PENDING)} RETURNING session_id
)
UPDATE calls SET state = {sql_value(CallState.DELIVERED)}, delivered_at = $2, updated_at = $2
WHERE session_id IN (SELECT session_id FROM d) AND state IN {ANALYSED}
  AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.session_id = calls.session_id
                  AND x.state NOT IN {DONE} AND x.id <> $1)
"""


MARK_DELIVERED = _settle(
    DeliveryState.DELIVERED, "delivered_at = $2, attempts = attempts + 1, last_error = NULL, "
)
MARK_FILTERED = _settle(DeliveryState.FILTERED, "")

PRUNE = f"""
WITH events AS (
    DELETE FROM inbound_events WHERE (source, event_id) IN (
        SELECT source, event_id FROM inbound_events WHERE received_at < $1 LIMIT $3 FOR UPDATE SKIP LOCKED)
    RETURNING 1
), gone AS (
    DELETE FROM calls WHERE session_id IN (
        SELECT session_id FROM calls c WHERE updated_at < $2 AND state IN {PRUNABLE}
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.session_id = c.session_id
                          AND d.state IN {UNDELIVERED})
        LIMIT $3 FOR UPDATE SKIP LOCKED)
    RETURNING 1
)
SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM gone) AS calls
"""

STATS = f"""
SELECT
    (SELECT json_build_array(count(*), min(received_at)) FROM calls WHERE state IN {TO_START}) AS start,
    (SELECT json_build_array(count(*), min(coalesce(started_at, received_at))) FROM calls
        WHERE state IN {IN_FLIGHT}) AS analysis,
    (SELECT json_build_array(count(*), min(created_at)) FROM deliveries WHERE state = {sql_value(DeliveryState.PENDING)}) AS delivery,
    (SELECT coalesce(json_object_agg(handler, n), '{{}}') FROM (SELECT handler, count(*) AS n FROM deliveries
        WHERE state = {sql_value(DeliveryState.DEAD)} GROUP BY handler) x) AS dead,
    (SELECT coalesce(json_object_agg(handler, n), '{{}}') FROM (SELECT handler, count(*) AS n FROM deliveries
        WHERE state = {sql_value(DeliveryState.ORPHANED)} GROUP BY handler) o) AS orphaned,
    (SELECT coalesce(json_object_agg(state, n), '{{}}') FROM (
        SELECT state, count(*) AS n FROM calls WHERE state IN {TO_START} GROUP BY state
        UNION ALL SELECT state, count(*) FROM calls WHERE state IN {IN_FLIGHT} GROUP BY state
        UNION ALL SELECT state, count(*) FROM calls WHERE state IN {ANALYSED} GROUP BY state
    ) y) AS by_state
"""

# --- perf (issue 9): the inbound events of concurrent requests in one statement ------------------
# One row per request, all distinct in (source, event_id) and in session_id (the batcher defers
# the others): ON CONFLICT DO UPDATE may not touch one row twice in a statement. Rows are inserted
# in key order so that two replicas' batches lock in the same order and cannot deadlock.
ACCEPT_CALLS = f"""
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[],
                         $7::text[], $8::float8[], $9::text[], $10::text[])
        WITH ORDINALITY AS t (source, event_id, type, session_id, call_json, end_session, analysis_key,
                              received_at, profile, include, ord)
), ev AS (
    INSERT INTO inbound_events (source, event_id, type, session_id, received_at)
    SELECT source, event_id, type, session_id, received_at FROM input ORDER BY source, event_id
    ON CONFLICT DO NOTHING RETURNING source, event_id
), upsert AS (
    INSERT INTO calls (session_id, state, call_json, end_session, analysis_key, received_at, next_at, updated_at,
                       analysis_profile, analysis_include)
    SELECT i.session_id, {sql_value(CallState.RECEIVED)}, i.call_json::jsonb, i.end_session, i.analysis_key,
           i.received_at, i.received_at, i.received_at, i.profile, i.include
    FROM input i JOIN ev ON ev.source = i.source AND ev.event_id = i.event_id
    -- a session analysed before (its call row may be pruned since) is never created again
    WHERE NOT EXISTS (SELECT 1 FROM analysed_sessions a WHERE a.session_id = i.session_id)
       OR EXISTS (SELECT 1 FROM calls c WHERE c.session_id = i.session_id)
    ORDER BY i.session_id
    ON CONFLICT (session_id) DO UPDATE SET
        call_json = receiver_merge_patch(calls.call_json, EXCLUDED.call_json),
        end_session = calls.end_session OR EXCLUDED.end_session,
        updated_at = EXCLUDED.updated_at
    RETURNING session_id, (xmax = 0) AS inserted
)
SELECT i.ord, ev.event_id IS NOT NULL AS fresh, u.inserted,
       CASE WHEN i.ord = 1 AND EXISTS (SELECT 1 FROM upsert WHERE inserted) THEN pg_notify($11, $12) END
FROM input i
LEFT JOIN ev ON ev.source = i.source AND ev.event_id = i.event_id
LEFT JOIN upsert u ON u.session_id = i.session_id AND ev.event_id IS NOT NULL
ORDER BY i.ord
"""
