-- The read API's live feed: after commit, PostgreSQL tells listeners of channel hookdb_sessions about
-- every new session and every change a session card shows (status, cost, reports, QA score, model).
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
          OR OLD.report_count IS DISTINCT FROM NEW.report_count
          OR OLD.subagent_count IS DISTINCT FROM NEW.subagent_count
          OR OLD.model IS DISTINCT FROM NEW.model
          OR OLD.meta->'qa_score' IS DISTINCT FROM NEW.meta->'qa_score')
    EXECUTE FUNCTION hookdb_notify_session();
