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
CREATE INDEX search_backlog_queued_idx ON search_backlog (queued_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON search_backlog TO hookdb_writer;  -- UPDATE: for FOR UPDATE

-- How many of the transaction's tenant's events search does not find yet (their documents deferred).
CREATE FUNCTION hookdb_search_pending() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce(sum(cardinality(event_ids)), 0)::bigint FROM search_backlog
    WHERE tenant_id = current_setting('hookdb.tenant', true)
$$;
