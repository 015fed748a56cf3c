-- Host periods (issue 20): the host records its own up-periods, append-only, so that its
-- downtime is not taken for the servers' (engine/host_periods.rs).
--
-- `host_runs` has one row per start of a host process. `resumed_from_ms` is the gap that start
-- closed: when a host was last known to be alive (its last alive mark or clean stop, or the
-- newest heartbeat or transition it committed), NULL when another host was still alive or no
-- host ever ran on this database before. Replay reads the gaps from here, so a rebuilt
-- snapshot folds them exactly where the live host did.
--
-- `host_alive` has one row per minute a host runs (plus one at its clean stop, `stopped` = 1):
-- a crash writes no stop row, so the last mark bounds the gap to within a minute. The cost is
-- bounded: 1,440 rows (≈ 60 KB) per host per day. Neither table is ever changed or deleted.
CREATE TABLE host_runs (
    id               INTEGER PRIMARY KEY,
    started_at_ms    INTEGER NOT NULL,
    resumed_from_ms  INTEGER,
    CHECK (resumed_from_ms IS NULL OR resumed_from_ms < started_at_ms)
);
CREATE INDEX host_runs_gaps ON host_runs (started_at_ms) WHERE resumed_from_ms IS NOT NULL;
CREATE TRIGGER host_runs_no_update BEFORE UPDATE ON host_runs
BEGIN SELECT RAISE(ABORT, 'host_runs is append-only'); END;
CREATE TRIGGER host_runs_no_delete BEFORE DELETE ON host_runs
BEGIN SELECT RAISE(ABORT, 'host_runs is append-only'); END;

CREATE TABLE host_alive (
    run_id   INTEGER NOT NULL REFERENCES host_runs (id),
    at_ms    INTEGER NOT NULL,
    stopped  INTEGER NOT NULL DEFAULT 0 CHECK (stopped IN (0, 1)),
    PRIMARY KEY (run_id, at_ms)
);
CREATE TRIGGER host_alive_no_update BEFORE UPDATE ON host_alive
BEGIN SELECT RAISE(ABORT, 'host_alive is append-only'); END;
CREATE TRIGGER host_alive_no_delete BEFORE DELETE ON host_alive
BEGIN SELECT RAISE(ABORT, 'host_alive is append-only'); END;
