-- Operator API: indexes for listing and filtering calls newest first, the replay log, handler
-- pauses (shared by every process), and which replay re-queued a delivery.
CREATE INDEX calls_received_newest ON calls (received_at, session_id);
CREATE INDEX calls_state_received ON calls (state, received_at, session_id);
CREATE INDEX calls_finished_at ON calls (finished_at) WHERE finished_at IS NOT NULL;
-- Reason text search walks only the calls that have a reason, newest first.
CREATE INDEX calls_with_reason ON calls (received_at, session_id) WHERE reason IS NOT NULL;
CREATE INDEX calls_phone_from ON calls (json_extract(call_json, '$.from'));
CREATE INDEX calls_phone_to ON calls (json_extract(call_json, '$.to'));
CREATE INDEX deliveries_handler_state ON deliveries (handler, state);
ALTER TABLE deliveries ADD COLUMN replay_id TEXT;
CREATE INDEX deliveries_replay_id ON deliveries (replay_id) WHERE replay_id IS NOT NULL;

CREATE TABLE replays (
    id           TEXT PRIMARY KEY,
    who          TEXT NOT NULL,
    at           REAL NOT NULL,
    dry_run      INTEGER NOT NULL,
    request_json TEXT NOT NULL,
    matched      INTEGER NOT NULL,
    replayed     INTEGER NOT NULL
);
CREATE INDEX replays_at ON replays (at);

CREATE TABLE handler_pauses (
    handler   TEXT PRIMARY KEY,
    who       TEXT NOT NULL,
    paused_at REAL NOT NULL
);

-- Every start and delivery attempt of a call, with its outcome (GET /admin/calls/{id}).
CREATE TABLE attempts (
    session_id TEXT NOT NULL REFERENCES calls (session_id) ON DELETE CASCADE,
    at         REAL NOT NULL,
    kind       TEXT NOT NULL,
    handler    TEXT,
    outcome    TEXT NOT NULL,
    code       INTEGER,
    reason     TEXT,
    next_at    REAL
);
CREATE INDEX attempts_session ON attempts (session_id, at);
