-- Host periods (issue 20): the same tables as migrations/sqlite/0012_host_periods.sql. Several
-- hosts share this database: a start closes a gap only when no other host was alive (its last
-- mark less than two minutes old and no clean stop), i.e. when every host was down.
CREATE TABLE host_runs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at_ms    BIGINT NOT NULL,
    resumed_from_ms  BIGINT,
    CHECK (resumed_from_ms IS NULL OR resumed_from_ms < started_at_ms)
);
CREATE INDEX host_runs_gaps ON host_runs (started_at_ms) WHERE resumed_from_ms IS NOT NULL;
CREATE TRIGGER host_runs_append_only BEFORE UPDATE OR DELETE ON host_runs
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER host_runs_no_truncate BEFORE TRUNCATE ON host_runs
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();

CREATE TABLE host_alive (
    run_id   BIGINT NOT NULL REFERENCES host_runs (id),
    at_ms    BIGINT NOT NULL,
    stopped  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, at_ms)
);
CREATE TRIGGER host_alive_append_only BEFORE UPDATE OR DELETE ON host_alive
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER host_alive_no_truncate BEFORE TRUNCATE ON host_alive
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
