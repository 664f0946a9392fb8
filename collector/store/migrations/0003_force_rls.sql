-- Row-level security for every login: FORCE makes it apply to a login that owns the tables too (only
-- superusers and BYPASSRLS roles pass, and the read API refuses to serve as those).
ALTER TABLE hook_audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE payload_blobs FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
ALTER TABLE reports FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_states FORCE ROW LEVEL SECURITY;

-- Keys that hold texts of any length: a btree key row holds at most about 2.7 kB, so a 3,000-character
-- report path failed reports_pkey (54000) and its batch with it. The key is the text's sha256, 32 bytes.
-- IMMUTABLE holds: the server encoding of a database never changes.
CREATE FUNCTION hookdb_text_key(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT sha256(convert_to(t, 'UTF8')) $$;

ALTER TABLE reports
    ADD COLUMN path_key bytea NOT NULL GENERATED ALWAYS AS (hookdb_text_key(path)) STORED,
    DROP CONSTRAINT reports_pkey,
    ADD PRIMARY KEY (tenant_id, session_id, path_key);

ALTER TABLE agent_states
    ADD COLUMN state_key bytea NOT NULL GENERATED ALWAYS AS (hookdb_text_key(agent_id) || hookdb_text_key(path)) STORED,
    DROP CONSTRAINT agent_states_pkey,
    ADD PRIMARY KEY (tenant_id, session_id, state_key);
