-- Issue 8, holes 6-9 (trust-state). No semicolon inside comments: the runner splits on them.

-- Hole 7: the analysis settings fixed at acceptance, in the order that is sent (the Idempotency-Key
-- was computed from them), and every attempt sends exactly these. NULL for calls accepted before 0002.
ALTER TABLE calls ADD COLUMN analysis_profile TEXT;
ALTER TABLE calls ADD COLUMN analysis_include TEXT;

-- Hole 8: a compact record of sessions already analysed, kept longer than the call rows
-- (RECEIVER_SESSION_MEMORY_DAYS), so that a session announced again after its call was pruned
-- is recognised and never POSTed again.
CREATE TABLE analysed_sessions (
    session_id   TEXT PRIMARY KEY,
    analysis_key TEXT NOT NULL,
    analysis_id  TEXT,
    analysed_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX analysed_sessions_analysed_at ON analysed_sessions (analysed_at);
INSERT INTO analysed_sessions (session_id, analysis_key, analysis_id, analysed_at)
    SELECT session_id, analysis_key, analysis_id, coalesce(started_at, updated_at) FROM calls
    WHERE analysis_id IS NOT NULL;

-- Holes 6 and 9: retention keeps every call with an undelivered result (pending, dead, orphaned).
CREATE INDEX deliveries_undelivered ON deliveries (session_id) WHERE state IN ('pending', 'dead', 'orphaned');
CREATE INDEX deliveries_orphaned ON deliveries (handler) WHERE state = 'orphaned';
