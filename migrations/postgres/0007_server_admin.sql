-- Server management (issue 18): the same tables as migrations/sqlite/0006_server_admin.sql.
-- The three `servers` columns are set by operators only (never by the engine's snapshot
-- commit). `server_audit` is history: append-only. `maintenance_windows` rows are created and
-- cancelled (cancelled_at_ms set once), never deleted.

ALTER TABLE servers ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE servers ADD COLUMN paused_at_ms BIGINT;
ALTER TABLE servers ADD COLUMN retired_at_ms BIGINT;

CREATE TABLE server_audit (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id  TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX server_audit_server ON server_audit (server_id, id DESC);
CREATE TRIGGER server_audit_append_only BEFORE UPDATE OR DELETE ON server_audit
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER server_audit_no_truncate BEFORE TRUNCATE ON server_audit
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();

CREATE TABLE maintenance_windows (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id        TEXT,
    cluster_id       TEXT,
    starts_at_ms     BIGINT NOT NULL,
    ends_at_ms       BIGINT NOT NULL,
    reason           TEXT,
    created_by       TEXT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    cancelled_at_ms  BIGINT,
    cancelled_by     TEXT
);
CREATE INDEX maintenance_windows_end ON maintenance_windows (ends_at_ms);
CREATE TRIGGER maintenance_windows_no_delete BEFORE DELETE ON maintenance_windows
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
