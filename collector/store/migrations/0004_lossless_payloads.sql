-- Payloads stored losslessly: strings and keys holding U+0000 (which jsonb cannot hold) are escaped by the
-- collector, and hookdb_payload() undoes that escaping; it now returns json, since only json can carry
-- U+0000.
DROP FUNCTION hookdb_payload(text, jsonb);

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
