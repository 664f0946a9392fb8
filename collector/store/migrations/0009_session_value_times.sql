-- When the event that set a session's model, agent_type, source and cost_usd occurred: the session row
-- keeps the latest event's value, so batches of one session from several collectors merge alike in any
-- commit order (before, the batch committed last won). Rows written before keep their values; the next
-- event that sets one replaces it.
ALTER TABLE sessions
    ADD COLUMN model_at      timestamptz,
    ADD COLUMN agent_type_at timestamptz,
    ADD COLUMN source_at     timestamptz,
    ADD COLUMN cost_usd_at   timestamptz;
