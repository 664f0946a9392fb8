-- What every session cost: a usage ledger of model API requests (from transcripts and Claude Code's OTLP
-- events), the read offsets of transcripts, and each session's totals.
ALTER TABLE sessions
    ADD COLUMN input_tokens bigint,
    ADD COLUMN output_tokens bigint,
    ADD COLUMN cache_read_tokens bigint,
    ADD COLUMN cache_creation_5m_tokens bigint,
    ADD COLUMN cache_creation_1h_tokens bigint,
    ADD COLUMN cost_source text,
    ADD COLUMN models text[];

-- One row per model API request (requestId in transcripts, request_id in Claude Code's OTLP events), however
-- many sources saw it: the figures kept are the best-founded (a reported cost over a computed one over an
-- unknown one), what a disagreeing source said is in alt. Written by the projection (collector/store/ledger.py).
CREATE TABLE usage_ledger (
    tenant_id                text        NOT NULL,
    session_id               text        NOT NULL,
    request_id               text        NOT NULL,
    agent                    text        NOT NULL,  -- 'main', or the subagent's id
    agent_type               text,
    model                    text,
    input_tokens             bigint      NOT NULL,
    output_tokens            bigint      NOT NULL,
    cache_read_tokens        bigint      NOT NULL,
    cache_creation_5m_tokens bigint      NOT NULL,
    cache_creation_1h_tokens bigint      NOT NULL,
    cost_usd                 numeric,               -- NULL when unknown, never 0
    cost_source              text        NOT NULL,  -- reported, computed or unknown
    at                       timestamptz NOT NULL,
    sources                  text[]      NOT NULL,  -- transcript, otlp, sdk
    alt                      jsonb       NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, session_id, request_id)
);

-- Usage over a range of days.
CREATE INDEX usage_ledger_at_idx ON usage_ledger (tenant_id, at);

-- How far the collector has read each transcript (line-aligned), so a read starts where the last one ended.
CREATE TABLE transcript_reads (
    tenant_id   text        NOT NULL,
    session_id  text        NOT NULL,
    path        text        NOT NULL,
    device      numeric     NOT NULL,  -- st_dev and st_ino: a replaced transcript is another file
    inode       numeric     NOT NULL,
    read_offset bigint      NOT NULL,
    cost_state  jsonb,                 -- the last cost-state line read: Claude Code's own account
    read_at     timestamptz NOT NULL,
    path_key    bytea       NOT NULL GENERATED ALWAYS AS (hookdb_text_key(path)) STORED,
    PRIMARY KEY (tenant_id, session_id, path_key)
);

ALTER TABLE usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_ledger
    USING (tenant_id = current_setting('hookdb.tenant', true))
    WITH CHECK (tenant_id = current_setting('hookdb.tenant', true));
ALTER TABLE transcript_reads ENABLE ROW LEVEL SECURITY;
ALTER TABLE transcript_reads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON transcript_reads
    USING (tenant_id = current_setting('hookdb.tenant', true))
    WITH CHECK (tenant_id = current_setting('hookdb.tenant', true));

GRANT SELECT, INSERT, UPDATE ON usage_ledger, transcript_reads TO hookdb_writer;
GRANT SELECT ON usage_ledger, transcript_reads TO hookdb_reader;
