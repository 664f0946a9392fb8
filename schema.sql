-- hookdb schema: the single source of truth for a fresh database.
--
-- A database is brought to it by the numbered migrations in collector/store/migrations/ (`hookdb migrate`,
-- also run by the collector at start-up); the tests check that applying them all yields exactly this
-- catalog. Every tenant table carries tenant_id in its primary key (ready to be distributed by tenant)
-- and is guarded by row-level security on the transaction-local setting hookdb.tenant.
-- Classifications (statuses, report types) are validated by the application, not by CHECK constraints.

CREATE TABLE schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,  -- sha256 of the migration file: an edited applied migration is refused
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Every hook event, as received. Range-partitioned by month on occurred_at; `hookdb partitions maintain`
-- creates months ahead, detaches and archives old ones. The default partition catches odd clocks.
CREATE TABLE hook_audit_log (
    tenant_id   text        NOT NULL,
    event_id    uuid        NOT NULL,
    occurred_at timestamptz NOT NULL,  -- set by the sender; in the key so the table can be partitioned by it
    received_at timestamptz NOT NULL,  -- set by the collector when the frame arrived
    session_id  text,
    event_type  text        NOT NULL,
    tool_name   text,
    source      text        NOT NULL,
    peer_pid    integer,               -- the sending process as the kernel saw it (SO_PEERCRED): not forgeable
    peer_uid    integer,
    peer_gid    integer,
    payload     jsonb       NOT NULL,  -- the hook input; strings of blob_min_bytes or more stand in payload_blobs
    PRIMARY KEY (tenant_id, event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE TABLE hook_audit_log_default PARTITION OF hook_audit_log DEFAULT;

-- The shape in which the collector sends a batch's events (collector/store/sink.py): one array of these per
-- tenant, its times as microseconds since the epoch.
CREATE TYPE hookdb_event_row AS (
    event_id    uuid,
    occurred_us bigint,
    received_us bigint,
    session_id  text,
    event_type  text,
    tool_name   text,
    source      text,
    peer_pid    integer,
    peer_uid    integer,
    peer_gid    integer,
    payload     jsonb
);

-- A session's timeline.
CREATE INDEX hook_audit_log_session_idx ON hook_audit_log (tenant_id, session_id, occurred_at);

-- Large payload strings (whole files in Write/Edit, base64 images from Read), stored once per tenant by
-- content: the payload holds {"$hookdb.blob": "<sha256>"} in their place; hookdb_payload() puts them back.
CREATE TABLE payload_blobs (
    tenant_id  text        NOT NULL,
    sha256     text        NOT NULL,
    content    text        NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);

-- One row per agent session, kept up to date from its events.
CREATE TABLE sessions (
    tenant_id       text        NOT NULL,
    session_id      text        NOT NULL,
    status          text        NOT NULL,
    status_at       timestamptz,           -- when the event that set the status occurred
    model           text,
    agent_type      text,
    cwd             text,
    transcript_path text,
    source          text,
    started_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    event_count     integer     NOT NULL DEFAULT 0,
    subagent_count  integer     NOT NULL DEFAULT 0,
    report_count    integer     NOT NULL DEFAULT 0,
    cost_usd        numeric,
    meta            jsonb       NOT NULL DEFAULT '{}',
    -- Totals of the session's requests in usage_ledger, kept true by the projection (NULL before any).
    input_tokens             bigint,
    output_tokens            bigint,
    cache_read_tokens        bigint,
    cache_creation_5m_tokens bigint,
    cache_creation_1h_tokens bigint,
    cost_source              text,    -- the weakest of its requests': unknown makes cost_usd a lower bound
    models                   text[],
    -- When the event that set model, agent_type, source and cost_usd occurred: the latest one's value
    -- stays, whichever collector's batch commits last.
    model_at                 timestamptz,
    agent_type_at            timestamptz,
    source_at                timestamptz,
    cost_usd_at              timestamptz,
    -- When the event that set each key of meta occurred (key → time): each key the latest event's.
    meta_at                  jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, session_id)
);

-- Keyset pagination of a tenant's sessions, newest first.
CREATE INDEX sessions_recent_idx ON sessions (tenant_id, started_at DESC, session_id DESC);

-- The key of a text of any length (a btree key row holds at most about 2.7 kB): its sha256, 32 bytes.
-- IMMUTABLE holds: the server encoding of a database never changes.
CREATE FUNCTION hookdb_text_key(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT sha256(convert_to(t, 'UTF8')) $$;

-- The markdown reports agents wrote, as they were on disk after the write.
CREATE TABLE reports (
    tenant_id   text        NOT NULL,
    session_id  text        NOT NULL,
    path        text        NOT NULL,
    report_type text        NOT NULL,
    content     text        NOT NULL,
    sha256      text        NOT NULL,
    word_count  integer     NOT NULL,
    written_at  timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    path_key    bytea       NOT NULL GENERATED ALWAYS AS (hookdb_text_key(path)) STORED,
    PRIMARY KEY (tenant_id, session_id, path_key)  -- a path of any length: a key row has a size limit
);

-- Agent state files (read from disk when a subagent stops), to recover a session.
CREATE TABLE agent_states (
    tenant_id  text        NOT NULL,
    session_id text        NOT NULL,
    agent_id   text        NOT NULL,
    path       text        NOT NULL,
    agent_type text,
    content    text        NOT NULL,
    sha256     text        NOT NULL,
    updated_at timestamptz NOT NULL,
    state_key  bytea       NOT NULL GENERATED ALWAYS AS (hookdb_text_key(agent_id) || hookdb_text_key(path)) STORED,
    PRIMARY KEY (tenant_id, session_id, state_key)  -- agent ids and paths of any length
);

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

-- Search documents deferred while delivery is behind (collector/store/search_backlog.py): one row per batch
-- and tenant names the searchable events whose documents are not made yet; a writer with no batch waiting
-- makes them (the documents the batch would have written) and deletes the row, in one transaction. Ids and
-- times only, no text: no row-level security; the writer alone reads it, and the read API counts its
-- tenant's through hookdb_search_pending().
CREATE TABLE search_backlog (
    tenant_id  text        NOT NULL,
    batch_key  bytea       NOT NULL,  -- its first event's id (16 bytes): a batch written again adds nothing
    event_ids  uuid[]      NOT NULL,
    first_at   timestamptz NOT NULL,  -- the earliest and latest of the events' times: the partitions to read
    last_at    timestamptz NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, batch_key)
);
-- Out of line uncompressed: PostgreSQL would try to compress the ids, which never compress (migration 0014).
ALTER TABLE search_backlog ALTER COLUMN event_ids SET STORAGE EXTERNAL;
CREATE INDEX search_backlog_queued_idx ON search_backlog (queued_at);

-- How many of the transaction's tenant's events search does not find yet (their documents deferred).
CREATE FUNCTION hookdb_search_pending() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(sum(cardinality(event_ids)), 0)::bigint FROM search_backlog
    WHERE tenant_id = current_setting('hookdb.tenant', true)
$$;

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

-- The dashboard's summary, kept by the projection in the write transaction (collector/store/summary.py):
-- events per tenant and hour, tool calls per tenant, day of their session's start, tool and duration bucket.

-- Events of a range's partial first and last hours are counted from the log itself, found by a BRIN index:
-- events arrive about in time order, and it costs a writer next to nothing (a btree costs about 5 µs an event).
CREATE INDEX hook_audit_log_time_brin ON hook_audit_log USING brin (occurred_at) WITH (autosummarize = on);

-- A tool call's duration bucket: 8 per doubling from 1 ms (each about 9% wide); -1 below 1 ms.
CREATE FUNCTION hookdb_duration_bucket(ms double precision) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN ms < 1 THEN -1 ELSE floor(ln(ms) / ln(2) * 8)::smallint END
$$;

-- Events per tenant and hour (of occurred_at).
CREATE TABLE event_hours (
    tenant_id text        NOT NULL,
    hour      timestamptz NOT NULL,
    events    bigint      NOT NULL,
    PRIMARY KEY (tenant_id, hour)
);

-- One row per tool call (tool_use_id within its session) not complete in one batch (see tool_call_sessions),
-- written by whichever of its PreToolUse and its first PostToolUse(Failure) comes first and completed by the
-- other, in any batch, from any collector.
CREATE TABLE tool_calls (
    tenant_id   text        NOT NULL,
    session_id  text        NOT NULL,
    tool_use_id text        NOT NULL,
    tool_name   text,                              -- the PreToolUse's
    started_at  timestamptz,                       -- the PreToolUse's occurred_at
    ended_at    timestamptz,                       -- the first end's
    failed      boolean     NOT NULL DEFAULT false, -- the first end is a PostToolUseFailure
    day         date,                              -- UTC day its session started, as of the PreToolUse
    -- What tool_call_days counted of the call before its last write (0 nothing, 1 started, 2 ended): the
    -- upsert returns it, so the summary adds each change once (PostgreSQL 15's RETURNING has no OLD).
    prior       smallint    NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, session_id, tool_use_id)
);

-- Tool calls per tenant, day (of their session's start), tool ('' when the PreToolUse named none) and
-- bucket: -2 started and not ended, else the duration bucket, with the least and greatest duration in it.
CREATE TABLE tool_call_days (
    tenant_id text             NOT NULL,
    day       date             NOT NULL,
    tool_name text             NOT NULL,
    bucket    smallint         NOT NULL,
    calls     bigint           NOT NULL,
    failures  bigint           NOT NULL,
    min_ms    double precision,
    max_ms    double precision,
    PRIMARY KEY (tenant_id, day, tool_name, bucket)
);

-- The calls whose PreToolUse and first end came in one batch, per tenant, session, tool ('' when the
-- PreToolUse named none) and duration bucket: counted when that batch is stored, without a tool_calls row
-- (a row costs the writer more than the rest of the summary). The stats read them, with tool_calls, for
-- the sessions of a range's partial first and last days.
CREATE TABLE tool_call_sessions (
    tenant_id  text             NOT NULL,
    session_id text             NOT NULL,
    tool_name  text             NOT NULL,
    bucket     smallint         NOT NULL,
    calls      bigint           NOT NULL,
    failures   bigint           NOT NULL,
    min_ms     double precision NOT NULL,
    max_ms     double precision NOT NULL,
    PRIMARY KEY (tenant_id, session_id, tool_name, bucket)
);

-- Rebuilds a tenant's summary from its stored events (this migration, and tests that insert rows directly).
CREATE FUNCTION hookdb_fill_summary(tenant text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM event_hours WHERE tenant_id = tenant;
    DELETE FROM tool_call_days WHERE tenant_id = tenant;
    DELETE FROM tool_calls WHERE tenant_id = tenant;
    DELETE FROM tool_call_sessions WHERE tenant_id = tenant;
    INSERT INTO event_hours (tenant_id, hour, events)
    SELECT tenant, date_trunc('hour', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
    FROM hook_audit_log WHERE tenant_id = tenant GROUP BY 2;
    INSERT INTO tool_calls (tenant_id, session_id, tool_use_id, tool_name, started_at, ended_at, failed, day,
                            prior)
    SELECT tenant, c.session_id, c.tool_use_id, c.tool_name, c.started_at, c.ended_at,
           coalesce(c.failed, false), CASE WHEN c.started_at IS NOT NULL THEN (s.started_at AT TIME ZONE 'UTC')::date END,
           CASE WHEN c.started_at IS NULL THEN 0 WHEN c.ended_at IS NULL THEN 1 ELSE 2 END
    FROM (SELECT session_id, payload->>'tool_use_id' AS tool_use_id,
                 (array_agg(tool_name ORDER BY occurred_at) FILTER (WHERE event_type = 'PreToolUse'))[1] AS tool_name,
                 min(occurred_at) FILTER (WHERE event_type = 'PreToolUse') AS started_at,
                 min(occurred_at) FILTER (WHERE event_type <> 'PreToolUse') AS ended_at,
                 (array_agg(event_type = 'PostToolUseFailure' ORDER BY occurred_at)
                     FILTER (WHERE event_type <> 'PreToolUse'))[1] AS failed
          FROM hook_audit_log
          WHERE tenant_id = tenant AND session_id IS NOT NULL AND payload->>'tool_use_id' IS NOT NULL
            AND event_type IN ('PreToolUse', 'PostToolUse', 'PostToolUseFailure')
          GROUP BY 1, 2) c
    LEFT JOIN sessions s ON s.tenant_id = tenant AND s.session_id = c.session_id;
    INSERT INTO tool_call_days (tenant_id, day, tool_name, bucket, calls, failures, min_ms, max_ms)
    SELECT tenant, day, coalesce(tool_name, ''), b, count(*), count(*) FILTER (WHERE failed), min(ms), max(ms)
    FROM (SELECT day, tool_name, failed, ms, coalesce(hookdb_duration_bucket(ms), -2::smallint) AS b
          FROM (SELECT day, tool_name, failed AND ended_at IS NOT NULL AS failed,
                       abs(extract(epoch FROM ended_at - started_at) * 1000)::double precision AS ms
                FROM tool_calls WHERE tenant_id = tenant AND prior > 0 AND day IS NOT NULL) d) c
    GROUP BY 2, 3, 4;
$$;

-- Row-level security: a transaction sees and writes only the tenant named by
-- set_config('hookdb.tenant', <tenant>, true); with none set, nothing at all. FORCE: also for a login that
-- owns the tables (only superusers and BYPASSRLS roles pass, and the read API refuses to serve as those).
DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['hook_audit_log', 'payload_blobs', 'sessions', 'reports', 'agent_states',
                                   'usage_ledger', 'transcript_reads', 'search_docs', 'event_hours',
                                   'tool_calls', 'tool_call_days', 'tool_call_sessions']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = current_setting(''hookdb.tenant'', true)) '
            'WITH CHECK (tenant_id = current_setting(''hookdb.tenant'', true))',
            tenant_table);
    END LOOP;
END
$$;

-- The walk of hookdb_payload (below): the JSON text of a stored value with its markers undone.
CREATE FUNCTION hookdb_payload_text(tenant text, doc jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pairs jsonb;
BEGIN
    CASE jsonb_typeof(doc)
    WHEN 'object' THEN
        IF (SELECT count(*) FROM jsonb_object_keys(doc)) = 1 THEN
            IF jsonb_typeof(doc->'$hookdb.blob') = 'string' THEN
                RETURN coalesce((SELECT to_json(b.content)::text FROM payload_blobs b
                                 WHERE b.tenant_id = tenant AND b.sha256 = doc->>'$hookdb.blob'), doc::text);
            END IF;
            IF jsonb_typeof(doc->'$hookdb.nul') = 'array' THEN
                -- Each part is a JSON string literal: join their insides with the escape of U+0000.
                RETURN '"' || (SELECT string_agg(substr(p, 2, length(p) - 2), '\u0000' ORDER BY n)
                               FROM jsonb_array_elements(doc->'$hookdb.nul') WITH ORDINALITY AS e(part, n),
                                    LATERAL hookdb_payload_text(tenant, part) AS p) || '"';
            END IF;
        END IF;
        pairs := CASE WHEN jsonb_typeof(doc->'$hookdb.keys') = 'array' THEN doc->'$hookdb.keys' END;
        RETURN '{' || coalesce((
            SELECT string_agg(k || ':' || v, ',')
            FROM (SELECT to_json(key)::text, hookdb_payload_text(tenant, value)
                  FROM jsonb_each(doc) WHERE pairs IS NULL OR key <> '$hookdb.keys'
                  UNION ALL
                  SELECT hookdb_payload_text(tenant, pair->0), hookdb_payload_text(tenant, pair->1)
                  FROM jsonb_array_elements(coalesce(pairs, '[]')) AS pair) AS entries(k, v)), '') || '}';
    WHEN 'array' THEN
        RETURN '[' || coalesce((SELECT string_agg(hookdb_payload_text(tenant, value), ',' ORDER BY n)
                                FROM jsonb_array_elements(doc) WITH ORDINALITY AS e(value, n)), '') || ']';
    ELSE
        RETURN doc::text;
    END CASE;
END
$$;

-- The payload of an event as it was sent: hookdb_payload(tenant_id, payload). It undoes what the collector
-- did to store it in jsonb (collector/store/blobs.py): blobs are put back, {"$hookdb.nul": [parts]} becomes
-- the parts joined by U+0000, and "$hookdb.keys": [[key, value], ...] entries return to their object.
-- json, not jsonb: only json can carry U+0000 (as the escape \u0000); cast to jsonb when there is none.
CREATE FUNCTION hookdb_payload(tenant text, doc jsonb) RETURNS json
LANGUAGE sql STABLE AS $$
    -- A payload without markers is returned as it is stored, without walking it.
    SELECT CASE WHEN strpos(doc::text, '"$hookdb.') = 0 THEN doc::json
                ELSE hookdb_payload_text(tenant, doc)::json END
$$;

-- Roles: the collector writes as hookdb_writer, the read API reads as hookdb_reader; grant them to login
-- roles (GRANT hookdb_writer TO collector_login). Neither bypasses row-level security.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hookdb_writer') THEN
        CREATE ROLE hookdb_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hookdb_reader') THEN
        CREATE ROLE hookdb_reader NOLOGIN;
    END IF;
END
$$;

-- The writer inserts and updates; SELECT only because INSERT ... ON CONFLICT DO UPDATE needs it (row-level
-- security still limits it to its transaction's tenant).
GRANT SELECT, INSERT, UPDATE ON hook_audit_log, payload_blobs, sessions, reports, agent_states, usage_ledger,
    transcript_reads, search_docs, event_hours, tool_calls, tool_call_days, tool_call_sessions
    TO hookdb_writer;
GRANT SELECT ON hook_audit_log, payload_blobs, sessions, reports, agent_states, usage_ledger, transcript_reads,
    search_docs, event_hours, tool_calls, tool_call_days, tool_call_sessions TO hookdb_reader;
GRANT SELECT ON schema_migrations TO hookdb_writer, hookdb_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON search_backlog TO hookdb_writer;  -- UPDATE: for FOR UPDATE

-- The read API's live feed: after commit, PostgreSQL tells listeners of channel hookdb_sessions about
-- every new session and every change a session card shows (status, cost and usage, reports, QA score,
-- model).
-- The payload names the tenant, so the API forwards each change only to that tenant's subscribers.
CREATE FUNCTION hookdb_notify_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- NOTIFY payloads are limited to 8000 bytes; an oversized id must not fail the writer's batch.
    IF octet_length(NEW.tenant_id) + octet_length(NEW.session_id) <= 7000 THEN
        PERFORM pg_notify('hookdb_sessions', json_build_object(
            'tenant_id', NEW.tenant_id,
            'session_id', NEW.session_id,
            'kind', CASE TG_OP WHEN 'INSERT' THEN 'new' ELSE 'update' END)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_notify_new AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION hookdb_notify_session();

CREATE TRIGGER sessions_notify_change AFTER UPDATE ON sessions
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.cost_usd IS DISTINCT FROM NEW.cost_usd
          OR OLD.cost_source IS DISTINCT FROM NEW.cost_source
          OR OLD.input_tokens IS DISTINCT FROM NEW.input_tokens
          OR OLD.output_tokens IS DISTINCT FROM NEW.output_tokens
          OR OLD.cache_read_tokens IS DISTINCT FROM NEW.cache_read_tokens
          OR OLD.cache_creation_5m_tokens IS DISTINCT FROM NEW.cache_creation_5m_tokens
          OR OLD.cache_creation_1h_tokens IS DISTINCT FROM NEW.cache_creation_1h_tokens
          OR OLD.models IS DISTINCT FROM NEW.models
          OR OLD.report_count IS DISTINCT FROM NEW.report_count
          OR OLD.subagent_count IS DISTINCT FROM NEW.subagent_count
          OR OLD.model IS DISTINCT FROM NEW.model
          OR OLD.meta->'qa_score' IS DISTINCT FROM NEW.meta->'qa_score')
    EXECUTE FUNCTION hookdb_notify_session();
