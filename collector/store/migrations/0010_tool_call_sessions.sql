-- The calls whose PreToolUse and first end came in one batch, per tenant, session, tool ('' when the
-- PreToolUse named none) and duration bucket: counted when that batch is stored, without a tool_calls row
-- (a row costs the writer more than the rest of the summary). The stats read them, with tool_calls, for
-- the sessions of a range's partial first and last days. The calls stored before keep their rows.
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

-- The rebuild empties it too: it puts every call back in tool_calls.
CREATE OR REPLACE FUNCTION hookdb_fill_summary(tenant text) RETURNS void
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

ALTER TABLE tool_call_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_call_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tool_call_sessions
    USING (tenant_id = current_setting('hookdb.tenant', true))
    WITH CHECK (tenant_id = current_setting('hookdb.tenant', true));

GRANT SELECT, INSERT, UPDATE ON tool_call_sessions TO hookdb_writer;
GRANT SELECT ON tool_call_sessions TO hookdb_reader;
