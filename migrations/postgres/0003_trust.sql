-- Trust (issue 4), PostgreSQL: the same as migrations/sqlite/0003. Named admin API keys; the
-- secret itself is never stored, only SHA-256 of it (keys are 256-bit random tokens).
-- Revocation sets revoked_at_ms once; a revoked key is never reactivated.
CREATE TABLE admin_keys (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    scope          TEXT NOT NULL CHECK (scope IN ('admin', 'read')),
    key_sha256     TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the whole token
    prefix         TEXT NOT NULL,            -- the token's first characters, to recognise it
    created_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT
);

-- The audit listing filters rejections by code: /v1/admin/rejections.
CREATE INDEX rejections_code ON rejections (code, id DESC);

CREATE TRIGGER admin_keys_no_delete BEFORE DELETE ON admin_keys
    FOR EACH ROW EXECUTE FUNCTION vigil_append_only();
CREATE FUNCTION vigil_admin_key_revoke_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at_ms IS NOT NULL OR NEW.name IS DISTINCT FROM OLD.name
        OR NEW.scope IS DISTINCT FROM OLD.scope OR NEW.key_sha256 IS DISTINCT FROM OLD.key_sha256
    THEN
        RAISE EXCEPTION 'admin_keys: only revocation may change a key'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER admin_keys_no_unrevoke BEFORE UPDATE ON admin_keys
    FOR EACH ROW EXECUTE FUNCTION vigil_admin_key_revoke_only();
