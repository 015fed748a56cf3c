-- Existing clients (issue 17): per-server ingest tokens, the `ingest` admin-key scope, and how
-- each stored heartbeat was authenticated.
--
-- `ingest_tokens`: credentials an operator mints for a server whose client cannot sign (a
-- Healthchecks ping UUID, an Uptime Kuma push token, a HomelabCmd agent token). Only the
-- token's SHA-256 is stored (tokens are 122 to 256 random bits: a fast hash is enough, there
-- is nothing to brute-force). Revocation sets revoked_at_ms once; rows are never deleted and a
-- revoked token never comes back.
CREATE TABLE ingest_tokens (
    id             INTEGER PRIMARY KEY,
    server_id      TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('ping', 'push', 'agent')),
    token_sha256   TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the whole token
    prefix         TEXT NOT NULL,            -- the token's first characters, to recognise it
    created_at_ms  INTEGER NOT NULL,
    created_by     TEXT NOT NULL,            -- `admin` (bootstrap token) or `key:<name>`
    revoked_at_ms  INTEGER,
    revoked_by     TEXT
);
CREATE INDEX ingest_tokens_server ON ingest_tokens (server_id, id);
CREATE TRIGGER ingest_tokens_no_delete BEFORE DELETE ON ingest_tokens
BEGIN SELECT RAISE(ABORT, 'ingest_tokens rows are revoked, never deleted'); END;
CREATE TRIGGER ingest_tokens_revoke_only BEFORE UPDATE ON ingest_tokens
WHEN OLD.revoked_at_ms IS NOT NULL OR NEW.server_id IS NOT OLD.server_id
    OR NEW.kind IS NOT OLD.kind OR NEW.token_sha256 IS NOT OLD.token_sha256
BEGIN SELECT RAISE(ABORT, 'ingest_tokens: only revocation may change a token'); END;

-- How the heartbeat was authenticated: `signature` | `token` | `api_key` | `network`. NULL on
-- rows stored before this migration: `signature` when `signature` is set, else `network`.
ALTER TABLE heartbeats ADD COLUMN auth TEXT;
-- The request body exactly as a compat client sent it (a Healthchecks ping's diagnostic text,
-- a HomelabCmd or PAP JSON body with every member it carried); NULL for the v1 routes, whose
-- `body` is already what the client sent. `body` holds the v1 form the policy folded.
ALTER TABLE heartbeats ADD COLUMN original_body TEXT;

-- The `ingest` scope (a HomelabCmd shared X-API-Key): SQLite cannot alter a CHECK, so the table
-- is rebuilt with its rows, ids and triggers.
CREATE TABLE admin_keys_0008 (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    scope          TEXT NOT NULL CHECK (scope IN ('admin', 'read', 'ingest')),
    key_sha256     TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER
);
INSERT INTO admin_keys_0008 (id, name, scope, key_sha256, prefix, created_at_ms, revoked_at_ms)
    SELECT id, name, scope, key_sha256, prefix, created_at_ms, revoked_at_ms FROM admin_keys;
-- DROP TABLE fires no trigger (SQLite's implicit DELETE FROM runs none).
DROP TABLE admin_keys;
ALTER TABLE admin_keys_0008 RENAME TO admin_keys;
CREATE TRIGGER admin_keys_no_delete BEFORE DELETE ON admin_keys
BEGIN SELECT RAISE(ABORT, 'admin_keys rows are revoked, never deleted'); END;
CREATE TRIGGER admin_keys_no_unrevoke BEFORE UPDATE ON admin_keys
WHEN OLD.revoked_at_ms IS NOT NULL OR NEW.name IS NOT OLD.name OR NEW.scope IS NOT OLD.scope
    OR NEW.key_sha256 IS NOT OLD.key_sha256
BEGIN SELECT RAISE(ABORT, 'admin_keys: only revocation may change a key'); END;
