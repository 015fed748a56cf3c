-- Vigil schema v1 (PostgreSQL): the same tables as migrations/sqlite/0001_init.sql. Never edit
-- once landed: add a new numbered file instead.
-- History tables (heartbeats, rejections, status_transitions, server_keys, policy_activations)
-- are append-only: the triggers at the end refuse UPDATE and DELETE. `servers` is the snapshot
-- cache (rebuildable by replay) and is updated in place. No logic lives in SQL.
--
-- `heartbeats` is partitioned by month on received_at_ms so retention drops whole partitions
-- (DETACH + DROP) instead of deleting rows. The host creates the monthly partitions ahead of
-- time (PostgresStore::ensure_partitions); the DEFAULT partition only catches rows outside them.
-- A unique constraint on a partitioned table must contain the partition key, so
-- UNIQUE (server_id, seq) cannot be declared here. It holds by construction instead: a batch
-- appends a server's events with seq in (old event_seq, new event_seq] and, in the same
-- transaction, moves servers.event_seq from exactly old to new (the update is conditional on the
-- old value and the commit fails otherwise), so two commits can never hand out the same seq.

CREATE TABLE servers (
    server_id         TEXT PRIMARY KEY NOT NULL,
    display_name      TEXT,
    cluster_id        TEXT,
    public_key        TEXT NOT NULL,            -- base64 raw ed25519 key of key_version
    key_version       BIGINT NOT NULL,
    is_verified       BOOLEAN NOT NULL DEFAULT FALSE,
    registered_at_ms  BIGINT NOT NULL,
    -- derived state, written only by the engine
    status            TEXT NOT NULL DEFAULT 'unknown',
    confidence        TEXT NOT NULL DEFAULT 'yellow',
    uptime_percent    DOUBLE PRECISION NOT NULL DEFAULT 0,
    quality_score     DOUBLE PRECISION NOT NULL DEFAULT 0,
    scores            TEXT NOT NULL DEFAULT '{}',   -- JSON object name -> number
    badges            TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    last_seen_at_ms   BIGINT,                       -- host receive time of the last accepted heartbeat
    last_sent_at_ms   BIGINT,                       -- agent timestamp of the last accepted heartbeat
    last_signature    TEXT,
    players_current   BIGINT,
    players_capacity  BIGINT,
    map_name          TEXT,
    agent_version     TEXT,
    event_seq         BIGINT NOT NULL DEFAULT 0,    -- events folded so far (heartbeats + rejections)
    evaluated_at_ms   BIGINT,                       -- now-ms of the last evaluation (event or tick)
    policy_name       TEXT,
    policy_version    TEXT,
    policy_digest     TEXT,
    policy_state      BYTEA,
    next_check_at_ms  BIGINT,
    policy_errors     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX servers_next_check ON servers (next_check_at_ms) WHERE next_check_at_ms IS NOT NULL;
CREATE INDEX servers_quality ON servers (quality_score DESC, server_id);

CREATE TABLE server_keys (
    server_id     TEXT NOT NULL,
    key_version   BIGINT NOT NULL,
    public_key    TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    added_at_ms   BIGINT NOT NULL,
    added_by      TEXT NOT NULL,
    PRIMARY KEY (server_id, key_version)
);

CREATE TABLE heartbeats (
    id              BIGINT GENERATED ALWAYS AS IDENTITY,
    server_id       TEXT NOT NULL,
    seq             BIGINT NOT NULL,      -- the server's event sequence number (replay order)
    received_at_ms  BIGINT NOT NULL,
    sent_at_ms      BIGINT NOT NULL,
    key_version     BIGINT NOT NULL,
    signature       TEXT NOT NULL,
    body            TEXT NOT NULL,        -- the JSON object exactly as received
    policy_digest   TEXT NOT NULL,        -- the policy that folded it
    PRIMARY KEY (id, received_at_ms)
) PARTITION BY RANGE (received_at_ms);
CREATE TABLE heartbeats_default PARTITION OF heartbeats DEFAULT;
CREATE INDEX heartbeats_server_seq ON heartbeats (server_id, seq);
CREATE INDEX heartbeats_server_received ON heartbeats (server_id, received_at_ms DESC);
CREATE INDEX heartbeats_received ON heartbeats (received_at_ms DESC);

CREATE TABLE rejections (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at_ms     BIGINT NOT NULL,
    code               TEXT NOT NULL,      -- the stable problem code answered
    http_status        BIGINT NOT NULL,
    detail             TEXT NOT NULL,
    claimed_server_id  TEXT,               -- as claimed by the request, if readable
    seq                BIGINT,             -- set when folded into a known server's policy
    source_ip          TEXT,
    body_sha256        TEXT
);
CREATE INDEX rejections_server ON rejections (claimed_server_id, received_at_ms DESC);
CREATE INDEX rejections_received ON rejections (received_at_ms DESC);

CREATE TABLE status_transitions (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id        TEXT NOT NULL,
    at_ms            BIGINT NOT NULL,
    cause            TEXT NOT NULL,        -- heartbeat | rejected | tick
    from_status      TEXT NOT NULL,
    to_status        TEXT NOT NULL,
    from_confidence  TEXT NOT NULL,
    to_confidence    TEXT NOT NULL,
    policy_digest    TEXT NOT NULL
);
CREATE INDEX status_transitions_server ON status_transitions (server_id, id DESC);

CREATE TABLE policies (
    digest          TEXT PRIMARY KEY NOT NULL,   -- sha256:<hex> of the component bytes
    name            TEXT NOT NULL,
    version         TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    component       BYTEA NOT NULL,
    uploaded_by     TEXT NOT NULL,
    uploaded_at_ms  BIGINT NOT NULL,
    signer          TEXT
);

CREATE TABLE policy_activations (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms        BIGINT NOT NULL,
    who          TEXT NOT NULL,
    from_digest  TEXT,
    to_digest    TEXT NOT NULL,
    reason       TEXT NOT NULL
);

-- The one guard function: it refuses, it decides nothing.
CREATE FUNCTION vigil_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END;
$$;

-- Row triggers on the partitioned `heartbeats` are cloned onto every partition, present and
-- future, so an UPDATE or DELETE naming a partition directly is refused too.
CREATE TRIGGER heartbeats_append_only BEFORE UPDATE OR DELETE ON heartbeats
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER rejections_append_only BEFORE UPDATE OR DELETE ON rejections
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER status_transitions_append_only BEFORE UPDATE OR DELETE ON status_transitions
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER server_keys_append_only BEFORE UPDATE OR DELETE ON server_keys
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER policy_activations_append_only BEFORE UPDATE OR DELETE ON policy_activations
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
-- TRUNCATE skips row triggers: refuse it on the unpartitioned history tables as well.
CREATE TRIGGER rejections_no_truncate BEFORE TRUNCATE ON rejections
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER status_transitions_no_truncate BEFORE TRUNCATE ON status_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER server_keys_no_truncate BEFORE TRUNCATE ON server_keys
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
CREATE TRIGGER policy_activations_no_truncate BEFORE TRUNCATE ON policy_activations
    FOR EACH STATEMENT EXECUTE FUNCTION vigil_append_only();
