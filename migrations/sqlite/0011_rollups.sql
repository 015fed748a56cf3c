-- Rollups (issue 18): hourly and daily uptime, quality and counts per server, written by the
-- engine from the policy's outputs as they are committed, and reproduced by replaying history
-- (engine/rollup.rs: the same fold, live and in replay).
--
-- A bucket is appended once, when an evaluation at or after its end closes it; rows are never
-- changed or deleted (triggers below). The bucket still open lives in the server's snapshot
-- (`servers.rollup`, a cache like the rest of the snapshot, overwritten with it).
--
-- Times are milliseconds: `observed_ms` is the time the policy's status was known (anything
-- but `unknown`), `online_ms` the part of it `online`; `quality_sum` is the sum over observed
-- time of round(quality × 100) × ms, an integer so every backend and every replay adds the
-- same numbers (mean quality = quality_sum / observed_ms / 100).
CREATE TABLE rollups (
    server_id      TEXT NOT NULL,
    span           TEXT NOT NULL CHECK (span IN ('hour', 'day')),
    start_ms       INTEGER NOT NULL,    -- UTC hour or day start, inclusive
    observed_ms    INTEGER NOT NULL,
    online_ms      INTEGER NOT NULL,
    quality_sum    INTEGER NOT NULL,
    beats          INTEGER NOT NULL,    -- accepted heartbeats folded in the bucket
    rejections     INTEGER NOT NULL,    -- refused requests folded in the bucket
    policy_digest  TEXT NOT NULL,       -- the policy of the evaluation that closed it
    PRIMARY KEY (server_id, span, start_ms)
);
CREATE TRIGGER rollups_no_update BEFORE UPDATE ON rollups
BEGIN SELECT RAISE(ABORT, 'rollups is append-only'); END;
CREATE TRIGGER rollups_no_delete BEFORE DELETE ON rollups
BEGIN SELECT RAISE(ABORT, 'rollups is append-only'); END;

-- The open hour and day of the server's rollup (JSON, written by the engine's snapshot commit).
ALTER TABLE servers ADD COLUMN rollup TEXT;
