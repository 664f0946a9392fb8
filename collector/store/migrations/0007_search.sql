-- Full-text search of sessions: one search document per session and batch (the texts of its prompts,
-- assistant messages, tool inputs and tool outputs, each bounded, one per line: see collector/store/search.py)
-- and one per report, written by the projections in the write transaction; GET /api/sessions?q= matches it
-- with websearch_to_tsquery and highlights the matching part with ts_headline.
CREATE TABLE search_docs (
    tenant_id  text        NOT NULL,
    session_id text        NOT NULL,
    doc_key    bytea       NOT NULL,  -- its first event's id (16 bytes), or a report's path_key (32)
    at         timestamptz NOT NULL,  -- its first event's time, or the report's
    kinds      text[]      NOT NULL,  -- each part's: prompt, reply, tool_input, tool_output, report
    ends       int[]       NOT NULL,  -- where each part ends in body (its last character's position)
    body       text        NOT NULL,  -- the text searched, bounded, without U+0000: the parts, one per line
    words      tsvector    NOT NULL GENERATED ALWAYS AS (to_tsvector('english'::regconfig, body)) STORED,
    PRIMARY KEY (tenant_id, session_id, doc_key)
);

CREATE INDEX search_docs_words_idx ON search_docs USING gin (words);
-- The planner's estimate of how many documents a word matches decides how the API searches
-- (collector/api/queries.py): with ten times the default statistics, a word outside the most common ten
-- thousand is estimated as rare, as it is.
ALTER TABLE search_docs ALTER COLUMN words SET STATISTICS 1000;

-- Under row-level security a condition uses an index only if its operator is LEAKPROOF (else it would run
-- before the policy's); text search's @@ is not marked so, although it reveals nothing but its answer.
-- Only a superuser may mark it: migrated by another role, search is still right but reads every document
-- (a superuser then runs the ALTER FUNCTION once, see README).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF;
    END IF;
END
$$;

ALTER TABLE search_docs ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_docs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_docs
    USING (tenant_id = current_setting('hookdb.tenant', true))
    WITH CHECK (tenant_id = current_setting('hookdb.tenant', true));

GRANT SELECT, INSERT, UPDATE ON search_docs TO hookdb_writer;
GRANT SELECT ON search_docs TO hookdb_reader;
