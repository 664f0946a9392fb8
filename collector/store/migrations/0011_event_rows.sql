-- The shape in which the collector sends a batch's events: one array of these per tenant (its times as
-- microseconds since the epoch), not one array per column. asyncpg encodes one composite array with a
-- quarter of the per-element checks of eleven arrays; PostgreSQL reads either at the same cost.
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
