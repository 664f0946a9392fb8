-- The live feed also tells of a session's usage changing (tokens, cost source, models): a session whose
-- tokens grow while its cost stays unknown is news to a card as well.
DROP TRIGGER sessions_notify_change ON sessions;

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
