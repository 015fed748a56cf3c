-- Policy lifecycle (issue 3), PostgreSQL: the same as migrations/sqlite/0002.
-- `policies` rows are content-addressed (the digest is the SHA-256 of `component`), so a row
-- never changes once stored; `policy_activations` is already append-only (0001).

-- The detached author signature (base64 ed25519 over `vigil-policy-v1\n` + digest), kept so a
-- stored version can be re-checked against `[policy] trusted_keys` when it is activated later.
ALTER TABLE policies ADD COLUMN signature TEXT;

-- `name@version` look-ups (activate, pin in the config).
CREATE INDEX policies_name_version ON policies (name, version, uploaded_at_ms DESC);

CREATE FUNCTION vigil_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows never change once stored', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER policies_no_update BEFORE UPDATE ON policies
    FOR EACH ROW EXECUTE FUNCTION vigil_immutable();
