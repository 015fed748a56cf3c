-- Rollups (issue 18): the same table as migrations/sqlite/0011_rollups.sql. A bucket is
-- appended once, when an evaluation at or after its end closes it, and never changed; the open
-- bucket lives in the server's snapshot (`servers.rollup`).
CREATE TABLE rollups (
    server_id      TEXT NOT NULL,
    span           TEXT NOT NULL CHECK (span IN ('hour', 'day')),
    start_ms       BIGINT NOT NULL,
    observed_ms    BIGINT NOT NULL,
    online_ms      BIGINT NOT NULL,
    quality_sum    BIGINT NOT NULL,
    beats          BIGINT NOT NULL,
    rejections     BIGINT NOT NULL,
    policy_digest  TEXT NOT NULL,
    PRIMARY KEY (server_id, span, start_ms)
);
CREATE TRIGGER rollups_append_only BEFORE UPDATE OR DELETE ON rollups
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER rollups_no_truncate BEFORE TRUNCATE ON rollups
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();

ALTER TABLE servers ADD COLUMN rollup TEXT;
