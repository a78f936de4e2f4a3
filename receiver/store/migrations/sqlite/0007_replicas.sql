-- The serve processes sharing this database, each seen within the last few seconds: how many
-- replicas split the organisation's Kallglot rate limit (RECEIVER_KALLGLOT_RATE_SHARE unset).
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    seen_at    REAL NOT NULL
);
