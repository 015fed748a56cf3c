-- Existing clients (issue 17): the same changes as migrations/sqlite/0008_ingest_tokens.sql.
-- `ingest_tokens` stores only each token's SHA-256; rows are revoked once, never deleted.
CREATE TABLE ingest_tokens (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id      TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('ping', 'push', 'agent')),
    token_sha256   TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    revoked_at_ms  BIGINT,
    revoked_by     TEXT
);
CREATE INDEX ingest_tokens_server ON ingest_tokens (server_id, id);
CREATE TRIGGER ingest_tokens_no_delete BEFORE DELETE ON ingest_tokens
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE FUNCTION vigil_ingest_token_revoke_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at_ms IS NOT NULL OR NEW.server_id IS DISTINCT FROM OLD.server_id
        OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.token_sha256 IS DISTINCT FROM OLD.token_sha256
    THEN
        RAISE EXCEPTION 'ingest_tokens: only revocation may change a token'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER ingest_tokens_revoke_only BEFORE UPDATE ON ingest_tokens
    FOR EACH ROW EXECUTE FUNCTION vigil_ingest_token_revoke_only();

-- `signature` | `token` | `api_key` | `network`; NULL before this migration (`signature` when
-- `signature` is set, else `network`).
ALTER TABLE heartbeats ADD COLUMN auth TEXT;
-- A compat client's request body exactly as sent; NULL for the v1 routes.
ALTER TABLE heartbeats ADD COLUMN original_body TEXT;

-- The `ingest` scope (a HomelabCmd shared X-API-Key).
ALTER TABLE admin_keys DROP CONSTRAINT admin_keys_scope_check;
ALTER TABLE admin_keys ADD CONSTRAINT admin_keys_scope_check
    CHECK (scope IN ('admin', 'read', 'ingest'));
