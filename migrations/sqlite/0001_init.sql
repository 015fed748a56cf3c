-- Vigil schema v1 (SQLite). Never edit once landed: add a new numbered file instead.
-- History tables (heartbeats, rejections, status_transitions, server_keys, policy_activations)
-- are append-only: the triggers at the end refuse UPDATE and DELETE. `servers` is the snapshot
-- cache (rebuildable by replay) and is updated in place. No logic lives in SQL.

CREATE TABLE servers (
    server_id         TEXT PRIMARY KEY NOT NULL,
    display_name      TEXT,
    cluster_id        TEXT,
    public_key        TEXT NOT NULL,            -- base64 raw ed25519 key of key_version
    key_version       INTEGER NOT NULL,
    is_verified       INTEGER NOT NULL DEFAULT 0,
    registered_at_ms  INTEGER NOT NULL,
    -- derived state, written only by the engine
    status            TEXT NOT NULL DEFAULT 'unknown',
    confidence        TEXT NOT NULL DEFAULT 'yellow',
    uptime_percent    REAL NOT NULL DEFAULT 0,
    quality_score     REAL NOT NULL DEFAULT 0,
    scores            TEXT NOT NULL DEFAULT '{}',   -- JSON object name -> number
    badges            TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    last_seen_at_ms   INTEGER,                      -- host receive time of the last accepted heartbeat
    last_sent_at_ms   INTEGER,                      -- agent timestamp of the last accepted heartbeat
    last_signature    TEXT,
    players_current   INTEGER,
    players_capacity  INTEGER,
    map_name          TEXT,
    agent_version     TEXT,
    event_seq         INTEGER NOT NULL DEFAULT 0,   -- events folded so far (heartbeats + rejections)
    evaluated_at_ms   INTEGER,                      -- now-ms of the last evaluation (event or tick)
    policy_name       TEXT,
    policy_version    TEXT,
    policy_digest     TEXT,
    policy_state      BLOB,
    next_check_at_ms  INTEGER,
    policy_errors     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX servers_next_check ON servers (next_check_at_ms) WHERE next_check_at_ms IS NOT NULL;
CREATE INDEX servers_quality ON servers (quality_score DESC, server_id);

CREATE TABLE server_keys (
    server_id     TEXT NOT NULL,
    key_version   INTEGER NOT NULL,
    public_key    TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    added_at_ms   INTEGER NOT NULL,
    added_by      TEXT NOT NULL,
    PRIMARY KEY (server_id, key_version)
);

CREATE TABLE heartbeats (
    id              INTEGER PRIMARY KEY,
    server_id       TEXT NOT NULL,
    seq             INTEGER NOT NULL,     -- the server's event sequence number (replay order)
    received_at_ms  INTEGER NOT NULL,
    sent_at_ms      INTEGER NOT NULL,
    key_version     INTEGER NOT NULL,
    signature       TEXT NOT NULL,
    body            TEXT NOT NULL,        -- the JSON object exactly as received
    policy_digest   TEXT NOT NULL,        -- the policy that folded it
    UNIQUE (server_id, seq)
);
CREATE INDEX heartbeats_server_received ON heartbeats (server_id, received_at_ms DESC);
CREATE INDEX heartbeats_received ON heartbeats (received_at_ms DESC);

CREATE TABLE rejections (
    id                 INTEGER PRIMARY KEY,
    received_at_ms     INTEGER NOT NULL,
    code               TEXT NOT NULL,      -- the stable problem code answered
    http_status        INTEGER NOT NULL,
    detail             TEXT NOT NULL,
    claimed_server_id  TEXT,               -- as claimed by the request, if readable
    seq                INTEGER,            -- set when folded into a known server's policy
    source_ip          TEXT,
    body_sha256        TEXT
);
CREATE INDEX rejections_server ON rejections (claimed_server_id, received_at_ms DESC);
CREATE INDEX rejections_received ON rejections (received_at_ms DESC);

CREATE TABLE status_transitions (
    id               INTEGER PRIMARY KEY,
    server_id        TEXT NOT NULL,
    at_ms            INTEGER NOT NULL,
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
    size_bytes      INTEGER NOT NULL,
    component       BLOB NOT NULL,
    uploaded_by     TEXT NOT NULL,
    uploaded_at_ms  INTEGER NOT NULL,
    signer          TEXT
);

CREATE TABLE policy_activations (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    who          TEXT NOT NULL,
    from_digest  TEXT,
    to_digest    TEXT NOT NULL,
    reason       TEXT NOT NULL
);

CREATE TRIGGER heartbeats_no_update BEFORE UPDATE ON heartbeats
BEGIN SELECT RAISE(ABORT, 'heartbeats is append-only'); END;
CREATE TRIGGER heartbeats_no_delete BEFORE DELETE ON heartbeats
BEGIN SELECT RAISE(ABORT, 'heartbeats is append-only'); END;
CREATE TRIGGER rejections_no_update BEFORE UPDATE ON rejections
BEGIN SELECT RAISE(ABORT, 'rejections is append-only'); END;
CREATE TRIGGER rejections_no_delete BEFORE DELETE ON rejections
BEGIN SELECT RAISE(ABORT, 'rejections is append-only'); END;
CREATE TRIGGER status_transitions_no_update BEFORE UPDATE ON status_transitions
BEGIN SELECT RAISE(ABORT, 'status_transitions is append-only'); END;
CREATE TRIGGER status_transitions_no_delete BEFORE DELETE ON status_transitions
BEGIN SELECT RAISE(ABORT, 'status_transitions is append-only'); END;
CREATE TRIGGER server_keys_no_update BEFORE UPDATE ON server_keys
BEGIN SELECT RAISE(ABORT, 'server_keys is append-only'); END;
CREATE TRIGGER server_keys_no_delete BEFORE DELETE ON server_keys
BEGIN SELECT RAISE(ABORT, 'server_keys is append-only'); END;
CREATE TRIGGER policy_activations_no_update BEFORE UPDATE ON policy_activations
BEGIN SELECT RAISE(ABORT, 'policy_activations is append-only'); END;
CREATE TRIGGER policy_activations_no_delete BEFORE DELETE ON policy_activations
BEGIN SELECT RAISE(ABORT, 'policy_activations is append-only'); END;
