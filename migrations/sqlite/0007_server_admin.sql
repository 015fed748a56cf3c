-- Server management (issue 18): labels, pause/resume, retirement, an audit trail of every
-- operator action on a server, and maintenance windows set through the admin API.
--
-- The three `servers` columns are set by operators only (never by the engine's snapshot
-- commit, which writes the derived columns alone). `server_audit` is history: append-only.
-- `maintenance_windows` rows are created and cancelled (cancelled_at_ms set once), never
-- deleted.

ALTER TABLE servers ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';   -- JSON object name -> text
ALTER TABLE servers ADD COLUMN paused_at_ms INTEGER;                -- set while paused
ALTER TABLE servers ADD COLUMN retired_at_ms INTEGER;               -- set once retired, for good

CREATE TABLE server_audit (
    id         INTEGER PRIMARY KEY,
    server_id  TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    action     TEXT NOT NULL,       -- edit | pause | resume | retire
    actor      TEXT NOT NULL,       -- who: `admin` (bootstrap token) or `key:<name>`
    detail     TEXT NOT NULL        -- JSON object: what changed
);
CREATE INDEX server_audit_server ON server_audit (server_id, id DESC);
CREATE TRIGGER server_audit_no_update BEFORE UPDATE ON server_audit
BEGIN SELECT RAISE(ABORT, 'server_audit is append-only'); END;
CREATE TRIGGER server_audit_no_delete BEFORE DELETE ON server_audit
BEGIN SELECT RAISE(ABORT, 'server_audit is append-only'); END;

CREATE TABLE maintenance_windows (
    id               INTEGER PRIMARY KEY,
    server_id        TEXT,               -- exactly one of server_id and cluster_id
    cluster_id       TEXT,
    starts_at_ms     INTEGER NOT NULL,   -- inclusive
    ends_at_ms       INTEGER NOT NULL,   -- exclusive
    reason           TEXT,
    created_by       TEXT NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    cancelled_at_ms  INTEGER,
    cancelled_by     TEXT
);
CREATE INDEX maintenance_windows_end ON maintenance_windows (ends_at_ms);
CREATE TRIGGER maintenance_windows_no_delete BEFORE DELETE ON maintenance_windows
BEGIN SELECT RAISE(ABORT, 'maintenance_windows rows are cancelled, never deleted'); END;
