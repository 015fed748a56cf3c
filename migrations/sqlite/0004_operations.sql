-- Operations (issue 7): the durable alert outbox and its deliveries.
--
-- `alert_outbox` rows are written by the engine in the SAME transaction as the transition or
-- signal that raised them, so an alert exists exactly when its cause is committed. The
-- dispatcher routes each row once (`routed_at_ms`) into one `alert_deliveries` row per sink,
-- then retries those with exponential backoff until delivered or too old. The alert itself is
-- immutable (trigger below); only its routing mark and the delivery state move.

CREATE TABLE alert_outbox (
    id             INTEGER PRIMARY KEY,
    server_id      TEXT NOT NULL,
    cluster_id     TEXT,
    kind           TEXT NOT NULL,      -- server_offline | server_online | confidence_red | emergency_mode | restart_detected
    severity       TEXT NOT NULL,      -- critical | warning | info | recovery
    at_ms          INTEGER NOT NULL,   -- when the cause happened (the evaluation's now-ms)
    summary        TEXT NOT NULL,
    details        TEXT NOT NULL,      -- JSON object
    policy_digest  TEXT NOT NULL,
    routed_at_ms   INTEGER             -- set once the dispatcher has created its deliveries
);
CREATE INDEX alert_outbox_unrouted ON alert_outbox (id) WHERE routed_at_ms IS NULL;
CREATE INDEX alert_outbox_server_kind ON alert_outbox (server_id, kind, at_ms DESC);

CREATE TABLE alert_deliveries (
    id                  INTEGER PRIMARY KEY,
    alert_id            INTEGER NOT NULL REFERENCES alert_outbox (id),
    sink                TEXT NOT NULL,
    state               TEXT NOT NULL,   -- pending | delivered | failed | duplicate | muted
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER,
    last_error          TEXT,
    created_at_ms       INTEGER NOT NULL,
    done_at_ms          INTEGER,
    UNIQUE (alert_id, sink)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at_ms) WHERE state = 'pending';
CREATE INDEX alert_deliveries_sink ON alert_deliveries (sink, state);

CREATE TRIGGER alert_outbox_immutable BEFORE UPDATE OF id, server_id, cluster_id, kind, severity,
    at_ms, summary, details, policy_digest ON alert_outbox
BEGIN SELECT RAISE(ABORT, 'alert_outbox rows are immutable'); END;
CREATE TRIGGER alert_outbox_no_delete BEFORE DELETE ON alert_outbox
BEGIN SELECT RAISE(ABORT, 'alert_outbox is append-only'); END;

-- Pending commands (issue 7). The host signs every command with its own ed25519 key, kept
-- here (one row) so every host instance sharing this database signs with the same key and a
-- restored backup keeps the key agents already trust.
CREATE TABLE host_keys (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    secret_key     TEXT NOT NULL,        -- base64 32-byte seed
    public_key     TEXT NOT NULL,        -- base64 raw public key
    created_at_ms  INTEGER NOT NULL
);
CREATE TRIGGER host_keys_no_update BEFORE UPDATE ON host_keys
BEGIN SELECT RAISE(ABORT, 'host_keys is append-only'); END;
CREATE TRIGGER host_keys_no_delete BEFORE DELETE ON host_keys
BEGIN SELECT RAISE(ABORT, 'host_keys is append-only'); END;

-- One row per queued command: the signed envelope is immutable; delivery and result are
-- each set once (guarded by `IS NULL` in the UPDATE). Every step is also in command_log.
CREATE TABLE commands (
    command_id       TEXT PRIMARY KEY NOT NULL,
    server_id        TEXT NOT NULL,
    command          TEXT NOT NULL,
    envelope         TEXT NOT NULL,    -- the host-signed JSON object sent to the agent
    issued_at_ms     INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    delivered_at_ms  INTEGER,
    result_at_ms     INTEGER,
    result_status    TEXT,
    result_body      TEXT              -- the agent-signed result object as received
);
CREATE INDEX commands_pending ON commands (server_id, issued_at_ms) WHERE delivered_at_ms IS NULL;

CREATE TABLE command_log (
    id          INTEGER PRIMARY KEY,
    command_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    event       TEXT NOT NULL,         -- queued | delivered | result
    detail      TEXT NOT NULL          -- JSON
);
CREATE TRIGGER command_log_no_update BEFORE UPDATE ON command_log
BEGIN SELECT RAISE(ABORT, 'command_log is append-only'); END;
CREATE TRIGGER command_log_no_delete BEFORE DELETE ON command_log
BEGIN SELECT RAISE(ABORT, 'command_log is append-only'); END;
