-- Carrier (telephony) callbacks, each kept: matched ones name their session, unmatched ones wait
-- (session_id NULL) until the mapping of their carrier call id to a session arrives.
CREATE TABLE carrier_events (
    source          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    carrier_call_id TEXT NOT NULL,
    session_id      TEXT,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,
    call_json       TEXT NOT NULL DEFAULT '{}',
    reason          TEXT,
    received_at     REAL NOT NULL,
    matched_at      REAL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX carrier_events_unmatched ON carrier_events (carrier_call_id) WHERE session_id IS NULL;
CREATE INDEX carrier_events_session ON carrier_events (session_id, carrier_call_id) WHERE session_id IS NOT NULL;

-- Which session a carrier call belongs to (from the callback, or Kallglot's session data).
CREATE TABLE carrier_calls (
    carrier_call_id TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL,
    recorded_at     REAL NOT NULL
);
