-- The dashboard's summary, kept by the projection in the write transaction (collector/store/summary.py), so
-- the stats read a few hundred rows instead of every event: events per tenant and hour, and tool calls per
-- tenant, UTC day of their session's start, tool and duration bucket. Filled here from the stored events.

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

-- One row per tool call (tool_use_id within its session), written by whichever of its PreToolUse and its
-- first PostToolUse(Failure) comes first and completed by the other, in any batch, from any collector.
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

-- Rebuilds a tenant's summary from its stored events (this migration, and tests that insert rows directly).
CREATE FUNCTION hookdb_fill_summary(tenant text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM event_hours WHERE tenant_id = tenant;
    DELETE FROM tool_call_days WHERE tenant_id = tenant;
    DELETE FROM tool_calls WHERE tenant_id = tenant;
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

-- Filled for every tenant; as the owner, row-level security is lifted for the fill only.
ALTER TABLE hook_audit_log NO FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions NO FORCE ROW LEVEL SECURITY;
SELECT hookdb_fill_summary(t.tenant_id) FROM (SELECT DISTINCT tenant_id FROM hook_audit_log) t;
ALTER TABLE hook_audit_log FORCE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;

DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY['event_hours', 'tool_calls', 'tool_call_days']
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

GRANT SELECT, INSERT, UPDATE ON event_hours, tool_calls, tool_call_days TO hookdb_writer;
GRANT SELECT ON event_hours, tool_calls, tool_call_days TO hookdb_reader;
