"""Full-text search documents: what a session said and did, as ``search_docs`` rows the read API matches.

One document per searchable event (``classification.SEARCH_FIELDS``: prompts, assistant messages, tool
inputs and outputs) and one per report, written in the batch's transaction under its tenant's row-level
security; PostgreSQL makes the ``tsvector`` (a generated column, GIN-indexed). What one event contributes is
bounded (``MAX_CHARS`` of a prompt's or reply's text, ``TOOL_CHARS`` of a tool input's or output's,
``MAX_REPORT_CHARS`` of a report: a tool output can be 700 KB,
a ``tsvector`` at most 1 MB and word positions stop at 16383), so the search work per event stays small.
The text has no U+0000 (text cannot hold it) and none of the characters the API's highlights are marked
with (``MARKS``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg

from hookdb.collector import classification as cls
from hookdb.collector.store.rows import Row

if TYPE_CHECKING:
    from hookdb.collector.store.projections import Projection

# What one event's field contributes, in characters: to_tsvector costs PostgreSQL about 1.5 ms per 4,096
# characters of English text. Prompts and replies are what people look for, one each a turn; tool calls are
# most events (and outputs the largest), so they contribute their beginning.
MAX_CHARS = 4096
TOOL_CHARS = 1024
_LIMITS = {"tool_input": TOOL_CHARS, "tool_output": TOOL_CHARS}
MAX_REPORT_CHARS = 64 * 1024  # reports are few (one write per report) and longer
CONFIG = "english"  # the text search configuration of search_docs.words (schema.sql) and of every query
START_MARK, END_MARK = "\x02", "\x03"  # where ts_headline marks a match: never in a document's text
MARKS = START_MARK + END_MARK
_CLEAN = str.maketrans({"\x00": " ", START_MARK: " ", END_MARK: " "})


class SearchDoc(NamedTuple):
    """One ``search_docs`` row of an event; the field order is the key order writes are made in."""

    tenant_id: str
    session_id: str
    doc_key: bytes  # the event id's 16 bytes
    kind: str
    at: datetime
    body: str


def text(value: Any, limit: int = MAX_CHARS) -> str:
    """The strings in ``value`` (a string, or the string leaves of JSON objects and arrays in document
    order, keys left out), one per line, cut at ``limit`` characters, without U+0000 and marks."""
    parts: list[str] = []
    size = 0
    todo = [value]  # an explicit stack: no payload depth can exhaust the Python stack
    while todo and size < limit:
        item = todo.pop()
        if isinstance(item, str):
            if item:
                parts.append(item[: limit - size])
                size += len(parts[-1]) + 1
        elif isinstance(item, dict):
            todo.extend(reversed(item.values()))
        elif isinstance(item, list):
            todo.extend(reversed(item))
    return "\n".join(parts)[:limit].translate(_CLEAN)


def document(row: Row, payload: dict[str, Any]) -> SearchDoc | None:
    """The search document of a searchable event, or ``None`` when it has no text to search."""
    kind, name = cls.SEARCH_FIELDS[row.event_type]
    body = text(payload.get(name), _LIMITS.get(kind, MAX_CHARS))
    if not body.strip() or row.session_id is None:
        return None
    return SearchDoc(row.tenant_id, row.session_id, row.event_id.bytes, kind, row.occurred_at, body)


_INSERT_DOCS = """
INSERT INTO search_docs (tenant_id, session_id, doc_key, kind, at, body)
SELECT $1::text, * FROM unnest($2::text[], $3::bytea[], $4::text[], $5::timestamptz[], $6::text[])
ON CONFLICT DO NOTHING
"""
# A report's document follows the report as stored (an older write does not replace a newer one there).
_UPSERT_REPORT_DOCS = f"""
INSERT INTO search_docs AS d (tenant_id, session_id, doc_key, kind, at, body)
SELECT r.tenant_id, r.session_id, r.path_key, '{cls.SEARCH_REPORT}', r.written_at,
       translate(left(r.content, {MAX_REPORT_CHARS}), E'\\x02\\x03', '  ')  -- MARKS out
FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k (session_id, path, n)
JOIN reports r ON r.tenant_id = $1 AND r.session_id = k.session_id AND r.path_key = hookdb_text_key(k.path)
ORDER BY k.n  -- key order, as every write of a batch
ON CONFLICT (tenant_id, session_id, doc_key) DO UPDATE SET at = EXCLUDED.at, body = EXCLUDED.body
    WHERE d.body IS DISTINCT FROM EXCLUDED.body
"""


async def write(conn: asyncpg.Connection, changes: Projection) -> None:
    """Write one tenant's new search documents, after its reports."""
    if changes.search:
        docs = sorted(changes.search)
        await conn.execute(_INSERT_DOCS, docs[0].tenant_id, *list(zip(*docs, strict=True))[1:])
    if changes.reports:
        keys = sorted(changes.reports)
        sessions, paths = [k[1] for k in keys], [k[2] for k in keys]
        await conn.execute(_UPSERT_REPORT_DOCS, keys[0][0], sessions, paths)
