-- Full-text search of sessions: one search document per prompt, assistant message, tool input, tool output
-- (each bounded, see collector/store/search.py) and report, written by the projections in the write
-- transaction; GET /api/sessions?q= matches it with websearch_to_tsquery and highlights it with ts_headline.
CREATE TABLE search_docs (
    tenant_id  text        NOT NULL,
    session_id text        NOT NULL,
    doc_key    bytea       NOT NULL,  -- an event's id (16 bytes), or a report's path_key (32)
    kind       text        NOT NULL,  -- prompt, reply, tool_input, tool_output, report
    at         timestamptz NOT NULL,
    body       text        NOT NULL,  -- the text searched, bounded, without U+0000
    words      tsvector    NOT NULL GENERATED ALWAYS AS (to_tsvector('english'::regconfig, body)) STORED,
    PRIMARY KEY (tenant_id, session_id, doc_key)
);

CREATE INDEX search_docs_words_idx ON search_docs USING gin (words);

ALTER TABLE search_docs ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_docs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_docs
    USING (tenant_id = current_setting('hookdb.tenant', true))
    WITH CHECK (tenant_id = current_setting('hookdb.tenant', true));

GRANT SELECT, INSERT, UPDATE ON search_docs TO hookdb_writer;
GRANT SELECT ON search_docs TO hookdb_reader;
