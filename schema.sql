-- hookdb schema: the single source of truth for a fresh database.
-- Applied by the collector when hook_audit_log is missing; safe to read, not to edit in place.

CREATE TABLE IF NOT EXISTS hook_audit_log (
    tenant_id   text        NOT NULL,
    event_id    uuid        NOT NULL,
    occurred_at timestamptz NOT NULL,  -- set by the sender; part of the key so the table can be partitioned by it
    received_at timestamptz NOT NULL,  -- set by the collector when the frame arrived
    session_id  text,
    event_type  text        NOT NULL,
    tool_name   text,
    source      text        NOT NULL,
    peer_pid    integer,               -- the sending process as the kernel saw it (SO_PEERCRED): not forgeable
    peer_uid    integer,
    peer_gid    integer,
    payload     jsonb       NOT NULL,  -- the hook input as received
    PRIMARY KEY (tenant_id, event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);

-- Catches every timestamp no monthly partition covers, so an odd clock never fails a write.
CREATE TABLE IF NOT EXISTS hook_audit_log_default PARTITION OF hook_audit_log DEFAULT;

-- A session's timeline.
CREATE INDEX IF NOT EXISTS hook_audit_log_session_idx ON hook_audit_log (tenant_id, session_id, occurred_at);
