-- Inbound event ids: the dedup shortcut (idempotency itself comes from the calls/deliveries keys).
CREATE TABLE inbound_events (
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    type        TEXT NOT NULL,
    session_id  TEXT,
    received_at REAL NOT NULL,
    PRIMARY KEY (source, event_id)
) WITHOUT ROWID;
CREATE INDEX inbound_events_received_at ON inbound_events (received_at);

-- One row per call (Kallglot session). The row is also the starter's and the poller's work item.
CREATE TABLE calls (
    session_id    TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    call_json     TEXT NOT NULL DEFAULT '{}',
    end_session   INTEGER NOT NULL DEFAULT 0,
    session_ended INTEGER NOT NULL DEFAULT 0,
    analysis_key  TEXT NOT NULL,
    analysis_id   TEXT,
    analysis_json TEXT,
    reason        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    polls         INTEGER NOT NULL DEFAULT 0,
    webhook_seen  INTEGER NOT NULL DEFAULT 0,
    finished_via  TEXT,
    received_at   REAL NOT NULL,
    started_at    REAL,
    finished_at   REAL,
    delivered_at  REAL,
    next_at       REAL NOT NULL,
    lease_owner   TEXT,
    lease_until   REAL,
    updated_at    REAL NOT NULL
);
-- Partial indexes, one per worker's query, so that a new call updates only one of them.
CREATE INDEX calls_to_start ON calls (next_at) WHERE state IN ('received', 'starting');
CREATE INDEX calls_in_flight ON calls (next_at) WHERE state IN ('processing', 'stale');
CREATE INDEX calls_analysis_id ON calls (analysis_id) WHERE analysis_id IS NOT NULL;
CREATE INDEX calls_to_deliver ON calls (state) WHERE state IN ('completed', 'failed');
CREATE INDEX calls_finished_updated_at ON calls (updated_at)
    WHERE state IN ('completed', 'failed', 'delivered', 'skipped');

-- The outbox: one row per (call, handler).
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES calls (session_id) ON DELETE CASCADE,
    handler          TEXT NOT NULL,
    status           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    first_attempt_at REAL,
    next_at          REAL NOT NULL,
    delivered_at     REAL,
    dead_at          REAL,
    replays          INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      REAL,
    UNIQUE (session_id, handler)
);
CREATE INDEX deliveries_pending ON deliveries (handler, next_at) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (dead_at) WHERE state = 'dead';
