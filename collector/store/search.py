"""Full-text search documents: what a session said and did, as ``search_docs`` rows the read API matches.

The searchable events (``classification.SEARCH_FIELDS``: prompts, assistant messages, tool inputs and
outputs) of one session in one batch make one document, their texts its parts in time order (``kinds`` and
``ends`` say which part is which): the row, its primary key entry and the GIN entries of the words the parts
share are paid once per session and batch, not once per event. A document is keyed by its first event's id,
so a batch written again conflicts with what it wrote (and a batch's new events, the only ones projected,
are in no other document). Each report is a document of its own. Documents are written in the batch's
transaction under its tenant's row-level security; PostgreSQL makes the ``tsvector`` (a generated column,
GIN-indexed). What one event contributes is bounded (``MAX_CHARS`` of a prompt's or reply's text,
``TOOL_CHARS`` of a tool input's or output's, ``MAX_REPORT_CHARS`` of a report: a tool output can be
700 KB), and so is a document (``DOC_CHARS``: a ``tsvector`` holds at most 1 MB and word positions stop at
16383), so the search work per event stays small. The text has no U+0000 (text cannot hold it) and none of
the characters the API's highlights are marked with (``MARKS``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from itertools import accumulate, groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import asyncpg

from hookdb.collector import classification as cls

if TYPE_CHECKING:
    from hookdb.collector.store.projections import Projection

# What one event's field contributes, in characters: to_tsvector costs PostgreSQL about 1.5 ms per 4,096
# characters of English text. Prompts and replies are what people look for, one each a turn; tool calls are
# most events (and outputs the largest), so they contribute their beginning.
MAX_CHARS = 4096
TOOL_CHARS = 1024
_LIMITS = {"tool_input": TOOL_CHARS, "tool_output": TOOL_CHARS}
# The most of any one string an event's part can hold: a string's first FIELD_CHARS characters make the
# same part as the whole string (the backfill reads no more of a large stored one).
FIELD_CHARS = max(MAX_CHARS, *_LIMITS.values())
MAX_REPORT_CHARS = 64 * 1024  # reports are few (one write per report) and longer
# What one document holds, in characters: about 5,000 words, all of them with their own position.
DOC_CHARS = 32 * 1024
CONFIG = "english"  # the text search configuration of search_docs.words (schema.sql) and of every query
START_MARK, END_MARK = "\x02", "\x03"  # where ts_headline marks a match: never in a document's text
MARKS = START_MARK + END_MARK
_CLEAN = str.maketrans({"\x00": " ", START_MARK: " ", END_MARK: " "})


class SearchDoc(NamedTuple):
    """One event's part of a session's search document (the name the projections know it by); the field
    order is the order parts are put in documents, and documents written."""

    tenant_id: str
    session_id: str
    at: datetime
    event_key: bytes  # the event id's 16 bytes
    kind: str
    body: str


class Document(NamedTuple):
    """One ``search_docs`` row: a session's parts of one batch, in time order, one per line."""

    session_id: str
    doc_key: bytes  # its first part's event id
    at: datetime  # its first part's time
    kinds: list[str]
    ends: list[int]  # where each part ends in ``body``: the 1-based position of its last character
    body: str


def text(value: Any, limit: int = MAX_CHARS) -> str:
    """The strings in ``value`` (a string, or the string leaves of JSON objects and arrays in document
    order, keys left out), one per line, cut at ``limit`` characters, without U+0000 and marks."""
    if isinstance(value, str):
        body = value[:limit]
    else:
        parts = _flat(value) if isinstance(value, dict) else None
        body = "\n".join(_leaves(value, limit) if parts is None else parts)[:limit]
    # Three scans for the characters are cheaper than translating every text (they are rare).
    if "\x00" in body or START_MARK in body or END_MARK in body:
        return body.translate(_CLEAN)
    return body


def _flat(value: dict[str, Any]) -> list[str] | None:
    """The non-empty strings of an object that holds no object or array (most tool inputs and outputs),
    else ``None``."""
    parts = []
    for item in value.values():
        if isinstance(item, str):
            if item:
                parts.append(item)
        elif isinstance(item, dict | list):
            return None
    return parts


def _leaves(value: Any, limit: int) -> list[str]:
    """The non-empty string leaves of ``value`` in document order, cut where they pass ``limit``."""
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
    return parts


class Searched(Protocol):
    """What :func:`document` reads of an event: a batch's ``Row``, or a stored one read back
    (``search_backlog.Stored``)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def event_id(self) -> uuid.UUID: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def event_type(self) -> str: ...


def document(row: Searched, payload: dict[str, Any]) -> SearchDoc | None:
    """The search document of a searchable event, or ``None`` when it has no text to search."""
    kind, name = cls.SEARCH_FIELDS[row.event_type]
    body = text(payload.get(name), _LIMITS.get(kind, MAX_CHARS))
    if not body or body.isspace() or row.session_id is None:
        return None
    return SearchDoc(row.tenant_id, row.session_id, row.occurred_at, row.event_id.bytes, kind, body)


def documents(parts: list[SearchDoc]) -> list[Document]:
    """One tenant's parts as documents: each session's in time order, a new document where the next part
    would take one past ``DOC_CHARS``; in key order, as every write of a batch."""
    docs: list[Document] = []
    for _, session in groupby(sorted(parts), key=attrgetter("session_id")):
        chunker = Chunker()
        docs.extend(doc for part in session if (doc := chunker.add(part)) is not None)
        if (last := chunker.close()) is not None:
            docs.append(last)
    return sorted(docs, key=attrgetter("session_id", "doc_key"))


class Chunker:
    """One session's parts, fed in time order, as documents: a new one where the next part would take the
    current past ``DOC_CHARS`` (sans-io, so a session too large to hold is chunked as it is read, exactly as
    :func:`documents` chunks it whole)."""

    def __init__(self) -> None:
        self._chunk: list[SearchDoc] = []
        self._size = -1  # of the chunk's parts and the line breaks between them

    def add(self, part: SearchDoc) -> Document | None:
        """Take the session's next part; the document it closes, if it closes one."""
        done = None
        if self._chunk and self._size + 1 + len(part.body) > DOC_CHARS:
            done = _document(self._chunk)
            self._chunk, self._size = [], -1
        self._chunk.append(part)
        self._size += 1 + len(part.body)
        return done

    def close(self) -> Document | None:
        """The session's last document (``None`` when no part was fed since the last one closed)."""
        done = _document(self._chunk) if self._chunk else None
        self._chunk, self._size = [], -1
        return done


def _document(chunk: list[SearchDoc]) -> Document:
    first = chunk[0]
    ends = list(accumulate(len(p.body) + 1 for p in chunk))
    return Document(
        first.session_id, first.event_key, first.at, [p.kind for p in chunk], [e - 1 for e in ends],
        "\n".join(p.body for p in chunk),
    )  # fmt: skip


_INSERT_DOCS = """
INSERT INTO search_docs (tenant_id, session_id, doc_key, at, kinds, ends, body)
SELECT $1::text, k.session_id, k.doc_key, k.at,
       string_to_array(k.kinds, ' '), string_to_array(k.ends, ' ')::int[], k.body
FROM unnest($2::text[], $3::bytea[], $4::timestamptz[], $5::text[], $6::text[], $7::text[])
    AS k (session_id, doc_key, at, kinds, ends, body)
ON CONFLICT DO NOTHING
"""
# A report's document follows the report as stored (an older write does not replace a newer one there).
_UPSERT_REPORT_DOCS = f"""
INSERT INTO search_docs AS d (tenant_id, session_id, doc_key, at, kinds, ends, body)
SELECT r.tenant_id, r.session_id, r.path_key, r.written_at, ARRAY['{cls.SEARCH_REPORT}'],
       ARRAY[length(t.body)], t.body
FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS k (session_id, path, n)
JOIN reports r ON r.tenant_id = $1 AND r.session_id = k.session_id AND r.path_key = hookdb_text_key(k.path)
CROSS JOIN LATERAL (SELECT translate(left(r.content, {MAX_REPORT_CHARS}), E'\\x02\\x03', '  ')  -- MARKS out
                    AS body) t
ORDER BY k.n  -- key order, as every write of a batch
ON CONFLICT (tenant_id, session_id, doc_key) DO UPDATE SET at = EXCLUDED.at, ends = EXCLUDED.ends,
    body = EXCLUDED.body
    WHERE d.body IS DISTINCT FROM EXCLUDED.body
"""


async def insert(conn: asyncpg.Connection, tenant: str, docs: list[Document]) -> int:
    """Insert ``tenant``'s documents (in key order) that are not there yet, in the transaction under way
    (its ``hookdb.tenant`` set); how many were new."""
    status = await conn.execute(
        _INSERT_DOCS,
        tenant,
        [d.session_id for d in docs],
        [d.doc_key for d in docs],
        [d.at for d in docs],
        [" ".join(d.kinds) for d in docs],  # text arrays of arrays must be rectangular: joined instead
        [" ".join(map(str, d.ends)) for d in docs],
        [d.body for d in docs],
    )
    return int(status.split()[-1])


async def write(conn: asyncpg.Connection, changes: Projection) -> None:
    """Write one tenant's new search documents, after its reports."""
    if changes.search:
        await insert(conn, changes.search[0].tenant_id, documents(changes.search))
    if changes.reports:
        keys = sorted(changes.reports)
        sessions, paths = [k[1] for k in keys], [k[2] for k in keys]
        await conn.execute(_UPSERT_REPORT_DOCS, keys[0][0], sessions, paths)
