-- PostgreSQL schema, the same tables as the SQLite one. Times are Unix seconds (double precision)
-- like the records; JSON documents are jsonb. Partial indexes serve exactly the workers' claims.

-- RFC 7396 JSON merge patch, the same merge as SQLite's json_patch() (accept_call merges fields).
CREATE FUNCTION receiver_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN
        target := '{}'::jsonb;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            target := target - k;
        ELSE
            target := jsonb_set(target, ARRAY[k], receiver_merge_patch(target -> k, v));
        END IF;
    END LOOP;
    RETURN target;
END
$$;

-- Inbound event ids: the dedup shortcut (idempotency itself comes from the calls/deliveries keys).
CREATE TABLE inbound_events (
    source      text NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    session_id  text,
    received_at double precision NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX inbound_events_received_at ON inbound_events (received_at);

-- One row per call (Kallglot session). The row is also the starter's and the poller's work item.
CREATE TABLE calls (
    session_id    text PRIMARY KEY,
    state         text NOT NULL,
    call_json     jsonb NOT NULL DEFAULT '{}',
    end_session   boolean NOT NULL DEFAULT false,
    session_ended boolean NOT NULL DEFAULT false,
    analysis_key  text NOT NULL,
    analysis_id   text,
    analysis_json jsonb,
    reason        text,
    attempts      integer NOT NULL DEFAULT 0,
    polls         integer NOT NULL DEFAULT 0,
    webhook_seen  boolean NOT NULL DEFAULT false,
    finished_via  text,
    received_at   double precision NOT NULL,
    started_at    double precision,
    finished_at   double precision,
    delivered_at  double precision,
    next_at       double precision NOT NULL,
    lease_owner   text,
    lease_until   double precision,
    updated_at    double precision NOT NULL
);
CREATE INDEX calls_to_start ON calls (next_at) WHERE state IN ('received', 'starting');
CREATE INDEX calls_in_flight ON calls (next_at) WHERE state IN ('processing', 'stale');
CREATE INDEX calls_analysis_id ON calls (analysis_id) WHERE analysis_id IS NOT NULL;
CREATE INDEX calls_finished_updated_at ON calls (updated_at)
    WHERE state IN ('completed', 'failed', 'delivered', 'skipped');

-- The outbox: one row per (call, handler).
CREATE TABLE deliveries (
    id               text PRIMARY KEY,
    session_id       text NOT NULL REFERENCES calls (session_id) ON DELETE CASCADE,
    handler          text NOT NULL,
    status           text NOT NULL,
    state            text NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    created_at       double precision NOT NULL,
    first_attempt_at double precision,
    next_at          double precision NOT NULL,
    delivered_at     double precision,
    dead_at          double precision,
    replays          integer NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_until      double precision,
    UNIQUE (session_id, handler)
);
CREATE INDEX deliveries_pending ON deliveries (handler, next_at) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (dead_at) WHERE state = 'dead';
