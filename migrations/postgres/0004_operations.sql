-- Operations (issue 7), PostgreSQL: the same as migrations/sqlite/0004. The durable alert
-- outbox and its deliveries, the host's command-signing key, pending commands and their log.
--
-- `alert_outbox` rows are written by the engine in the SAME transaction as the transition or
-- signal that raised them. The dispatcher routes each row once (`routed_at_ms`) into one
-- `alert_deliveries` row per sink, then retries those until delivered or too old. With several
-- hosts, each claim is a conditional UPDATE, so every host may run a dispatcher and a row is
-- still routed, and a delivery attempted, by one host at a time.

CREATE TABLE alert_outbox (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id      TEXT NOT NULL,
    cluster_id     TEXT,
    kind           TEXT NOT NULL,      -- server_offline | server_online | confidence_red | emergency_mode | restart_detected
    severity       TEXT NOT NULL,      -- critical | warning | info | recovery
    at_ms          BIGINT NOT NULL,    -- when the cause happened (the evaluation's now-ms)
    summary        TEXT NOT NULL,
    details        TEXT NOT NULL,      -- JSON object
    policy_digest  TEXT NOT NULL,
    routed_at_ms   BIGINT              -- set once the dispatcher has created its deliveries
);
CREATE INDEX alert_outbox_unrouted ON alert_outbox (id) WHERE routed_at_ms IS NULL;
CREATE INDEX alert_outbox_server_kind ON alert_outbox (server_id, kind, at_ms DESC);

CREATE TABLE alert_deliveries (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id            BIGINT NOT NULL REFERENCES alert_outbox (id),
    sink                TEXT NOT NULL,
    state               TEXT NOT NULL,   -- pending | delivered | failed | duplicate | muted
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT,
    last_error          TEXT,
    created_at_ms       BIGINT NOT NULL,
    done_at_ms          BIGINT,
    UNIQUE (alert_id, sink)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at_ms) WHERE state = 'pending';
CREATE INDEX alert_deliveries_sink ON alert_deliveries (sink, state);

CREATE FUNCTION vigil_alert_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF ROW(NEW.id, NEW.server_id, NEW.cluster_id, NEW.kind, NEW.severity, NEW.at_ms,
           NEW.summary, NEW.details, NEW.policy_digest)
       IS DISTINCT FROM
       ROW(OLD.id, OLD.server_id, OLD.cluster_id, OLD.kind, OLD.severity, OLD.at_ms,
           OLD.summary, OLD.details, OLD.policy_digest)
    THEN
        RAISE EXCEPTION 'alert_outbox rows are immutable' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER alert_outbox_immutable BEFORE UPDATE ON alert_outbox
    FOR EACH ROW EXECUTE FUNCTION vigil_alert_immutable();
CREATE TRIGGER alert_outbox_no_delete BEFORE DELETE ON alert_outbox
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();

-- The host signs every command with its own ed25519 key, kept here (one row) so every host
-- sharing this database signs with the same key.
CREATE TABLE host_keys (
    id             BIGINT PRIMARY KEY CHECK (id = 1),
    secret_key     TEXT NOT NULL,        -- base64 32-byte seed
    public_key     TEXT NOT NULL,        -- base64 raw public key
    created_at_ms  BIGINT NOT NULL
);
CREATE TRIGGER host_keys_append_only BEFORE UPDATE OR DELETE ON host_keys
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();

CREATE TABLE commands (
    command_id       TEXT PRIMARY KEY NOT NULL,
    server_id        TEXT NOT NULL,
    command          TEXT NOT NULL,
    envelope         TEXT NOT NULL,    -- the host-signed JSON object sent to the agent
    issued_at_ms     BIGINT NOT NULL,
    expires_at_ms    BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    delivered_at_ms  BIGINT,
    result_at_ms     BIGINT,
    result_status    TEXT,
    result_body      TEXT              -- the agent-signed result object as received
);
CREATE INDEX commands_pending ON commands (server_id, issued_at_ms) WHERE delivered_at_ms IS NULL;

CREATE TABLE command_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command_id  TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    event       TEXT NOT NULL,         -- queued | delivered | result
    detail      TEXT NOT NULL          -- JSON
);
CREATE TRIGGER command_log_append_only BEFORE UPDATE OR DELETE ON command_log
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER alert_and_command_no_truncate BEFORE TRUNCATE ON command_log
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
