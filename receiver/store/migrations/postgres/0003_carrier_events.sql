-- Carrier (telephony) callbacks, each kept: matched ones name their session, unmatched ones wait
-- (session_id NULL) until the mapping of their carrier call id to a session arrives.
CREATE TABLE carrier_events (
    source          text NOT NULL,
    event_id        text NOT NULL,
    carrier_call_id text NOT NULL,
    session_id      text,
    kind            text NOT NULL,
    status          text NOT NULL,
    call_json       jsonb NOT NULL DEFAULT '{}',
    reason          text,
    received_at     double precision NOT NULL,
    matched_at      double precision,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX carrier_events_unmatched ON carrier_events (carrier_call_id) WHERE session_id IS NULL;
CREATE INDEX carrier_events_session ON carrier_events (session_id, carrier_call_id) WHERE session_id IS NOT NULL;

-- Which session a carrier call belongs to (from the callback, or Kallglot's session data).
CREATE TABLE carrier_calls (
    carrier_call_id text PRIMARY KEY,
    session_id      text NOT NULL,
    recorded_at     double precision NOT NULL
);
