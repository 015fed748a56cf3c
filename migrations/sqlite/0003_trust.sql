-- Trust (issue 4): named admin API keys. The secret itself is never stored, only SHA-256 of it
-- (keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force).
-- Revocation sets revoked_at_ms once; a revoked key is never reactivated (the host refuses it).
CREATE TABLE admin_keys (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    scope          TEXT NOT NULL CHECK (scope IN ('admin', 'read')),
    key_sha256     TEXT NOT NULL UNIQUE,     -- hex SHA-256 of the whole token
    prefix         TEXT NOT NULL,            -- the token's first characters, to recognise it
    created_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER
);

-- The audit listing filters rejections by code: /v1/admin/rejections.
CREATE INDEX rejections_code ON rejections (code, id DESC);

CREATE TRIGGER admin_keys_no_delete BEFORE DELETE ON admin_keys
BEGIN SELECT RAISE(ABORT, 'admin_keys rows are revoked, never deleted'); END;
CREATE TRIGGER admin_keys_no_unrevoke BEFORE UPDATE ON admin_keys
WHEN OLD.revoked_at_ms IS NOT NULL OR NEW.name IS NOT OLD.name OR NEW.scope IS NOT OLD.scope
    OR NEW.key_sha256 IS NOT OLD.key_sha256
BEGIN SELECT RAISE(ABORT, 'admin_keys: only revocation may change a key'); END;
