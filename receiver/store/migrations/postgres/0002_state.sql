-- Issue 8, holes 6-9 (trust-state): the same changes as the SQLite 0002.

-- Hole 7: the analysis settings fixed at acceptance, in the order that is sent.
ALTER TABLE calls ADD COLUMN analysis_profile text;
ALTER TABLE calls ADD COLUMN analysis_include text;

-- Hole 8: sessions already analysed, kept longer than the call rows (RECEIVER_SESSION_MEMORY_DAYS).
CREATE TABLE analysed_sessions (
    session_id   text PRIMARY KEY,
    analysis_key text NOT NULL,
    analysis_id  text,
    analysed_at  double precision NOT NULL
);
CREATE INDEX analysed_sessions_analysed_at ON analysed_sessions (analysed_at);
INSERT INTO analysed_sessions (session_id, analysis_key, analysis_id, analysed_at)
    SELECT session_id, analysis_key, analysis_id, coalesce(started_at, updated_at) FROM calls
    WHERE analysis_id IS NOT NULL;

-- Holes 6 and 9: retention keeps every call with an undelivered result (pending, dead, orphaned).
CREATE INDEX deliveries_undelivered ON deliveries (session_id) WHERE state IN ('pending', 'dead', 'orphaned');
CREATE INDEX deliveries_orphaned ON deliveries (handler) WHERE state = 'orphaned';
