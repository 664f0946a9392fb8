"""Projections: what the new events of a batch change in ``sessions``, ``reports``, ``agent_states`` and
``search_docs``.

Pure aggregation first (:func:`project`, driven by the tables in ``classification``), then the file
reads it asks for (:func:`read_files`), done by the sink before its transaction. Only events that were
new rows are projected, so a redelivered event never counts twice.

Files are read only when the kernel-reported uid of the sender owns them, they are regular files (no
symlink is followed) and not larger than ``MAX_FILE_BYTES``: a client cannot make the collector read
someone else's file into its tenant.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import trio

from hookdb.collector import classification as cls
from hookdb.collector.store import blobs, search, summary
from hookdb.collector.store.rows import Row

if TYPE_CHECKING:
    from hookdb.collector.store import ledger

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``**/`` any directories (or none), ``*`` and ``?`` within one name."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


_REPORT_PATTERNS = [(glob_regex(p), kind) for p, kind in cls.REPORT_PATTERNS]


def report_type(path: str) -> str | None:
    """The report type of a written file's path, or ``None`` when it is not a report."""
    return next((kind for regex, kind in _REPORT_PATTERNS if regex.match(path)), None)


@dataclass
class SessionChange:
    """What one batch's new events change in one session row."""

    tenant_id: str
    session_id: str
    started_at: datetime
    updated_at: datetime
    event_count: int = 0
    status: str | None = None
    status_at: datetime | None = None
    model: str | None = None
    agent_type: str | None = None
    cwd: str | None = None
    transcript_path: str | None = None
    source: str | None = None
    ended_at: datetime | None = None
    subagent_count: int = 0
    cost_usd: Decimal | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    meta_at: dict[str, datetime] = field(default_factory=dict)  # when the event that set each key occurred
    # When the event that set each value a later event may replace occurred: the session row keeps the
    # latest by these times, so batches from several collectors (or delivery processes, or writers) merge
    # alike in any commit order.
    model_at: datetime | None = None
    agent_type_at: datetime | None = None
    source_at: datetime | None = None
    cost_usd_at: datetime | None = None

    def latest(self, name: str, value: object, at: datetime) -> None:
        """Set ``name`` to ``value`` unless a later event of the batch has set it already."""
        if value is None:
            return
        stamp = getattr(self, f"{name}_at")
        if stamp is None or at >= stamp:
            setattr(self, name, value)
            setattr(self, f"{name}_at", at)

    def latest_meta(self, key: str, value: object, at: datetime) -> None:
        """Set ``meta[key]`` to ``value`` unless a later event of the batch has set it already."""
        stamp = self.meta_at.get(key)
        if stamp is None or at >= stamp:
            self.meta[key], self.meta_at[key] = value, at


@dataclass
class ReportWrite:
    tenant_id: str
    session_id: str
    path: str
    report_type: str
    written_at: datetime
    event_id: Any
    owner_uid: int | None  # the sender's uid: the file must be its
    inline: str | None  # the content the event carries (Write), for when the file cannot be read
    content: str | None = None


@dataclass
class StateRead:
    tenant_id: str
    session_id: str
    agent_id: str
    agent_type: str | None
    cwd: str
    at: datetime
    owner_uid: int | None
    files: dict[str, str] = field(default_factory=dict)  # path → content, filled by read_files


@dataclass
class Projection:
    sessions: dict[tuple[str, str], SessionChange] = field(default_factory=dict)
    reports: dict[tuple[str, str, str], ReportWrite] = field(default_factory=dict)
    states: list[StateRead] = field(default_factory=list)
    ended: set[tuple[str, str]] = field(default_factory=set)
    search: list[search.SearchDoc] = field(default_factory=list)
    deferred: list[Row] = field(default_factory=list)  # searchable rows whose documents are made later
    hours: dict[int, int] = field(default_factory=dict)  # events per UTC hour (summary.count_hours)
    calls: summary.Calls = field(default_factory=summary.Calls)  # tool call events, for the summary
    usage: ledger.Usage | None = None  # the batch's usage, read by ledger.read for ledger.apply


def _str(value: object) -> str | None:
    """A non-empty text fit for a text column: PostgreSQL text cannot hold U+0000 (the payload keeps it)."""
    return value if isinstance(value, str) and value and "\x00" not in value else None


def _session_start(
    change: SessionChange, payload: dict[str, Any], at: datetime, _: Row, __: Projection
) -> None:
    change.latest("model", _str(payload.get("model")), at)
    change.latest("agent_type", _str(payload.get("agent_type")), at)
    change.latest("source", _str(payload.get("source")), at)
    _status(change, payload, at, _, __)


def _status(change: SessionChange, payload: dict[str, Any], at: datetime, row: Row, __: Projection) -> None:
    status = cls.EVENT_STATUS[row.event_type]
    if change.status_at is None or at >= change.status_at:
        change.status, change.status_at = status, at


def _session_end(
    change: SessionChange, payload: dict[str, Any], at: datetime, row: Row, out: Projection
) -> None:
    _status(change, payload, at, row, out)
    if change.ended_at is None or at >= change.ended_at:  # the later end, as between batches
        change.ended_at = at
        if reason := _str(payload.get("reason")):
            change.latest_meta("end_reason", reason, at)
    out.ended.add((change.tenant_id, change.session_id))


def _subagent_start(
    change: SessionChange, payload: dict[str, Any], at: datetime, _: Row, __: Projection
) -> None:
    change.subagent_count += 1


def _subagent_stop(
    change: SessionChange, payload: dict[str, Any], at: datetime, row: Row, out: Projection
) -> None:
    cwd = _str(payload.get("cwd")) or change.cwd
    agent_id = _str(payload.get("agent_id")) or _str(payload.get("agent_type")) or "main"
    if cwd:
        out.states.append(
            StateRead(
                change.tenant_id,
                change.session_id,
                agent_id,
                _str(payload.get("agent_type")),
                cwd,
                at,
                row.peer_uid,
            )
        )


def _post_tool_use(
    change: SessionChange, payload: dict[str, Any], at: datetime, row: Row, out: Projection
) -> None:
    if row.tool_name not in cls.WRITE_TOOLS:
        return
    tool_input = payload.get("tool_input")
    if not isinstance(tool_input, dict):
        return
    path = _str(tool_input.get("file_path"))
    kind = report_type(path) if path else None
    if path is None or kind is None:
        return
    key = (change.tenant_id, change.session_id, path)
    previous = out.reports.get(key)
    if previous is None or at >= previous.written_at:
        out.reports[key] = ReportWrite(
            change.tenant_id,
            change.session_id,
            path,
            kind,
            at,
            row.event_id,
            row.peer_uid,
            _str(tool_input.get("content")) or _str(_edited(tool_input, payload.get("tool_response"))),
        )


def _edited(tool_input: dict[str, Any], response: Any) -> str | None:
    """The file after an Edit or MultiEdit, from the original the tool response carries."""
    text = response.get("originalFile") if isinstance(response, dict) else None
    edits = tool_input.get("edits", [tool_input])
    if not isinstance(text, str) or not isinstance(edits, list):
        return None
    for edit in edits:
        if not isinstance(edit, dict):
            return None
        old, new = edit.get("old_string"), edit.get("new_string")
        if not (isinstance(old, str) and isinstance(new, str) and old in text):
            return None
        text = text.replace(old, new) if edit.get("replace_all") else text.replace(old, new, 1)
    return text


def _result(change: SessionChange, payload: dict[str, Any], at: datetime, _: Row, __: Projection) -> None:
    cost = payload.get("total_cost_usd")
    if isinstance(cost, int | float | Decimal) and not isinstance(cost, bool):
        change.latest("cost_usd", Decimal(str(cost)), at)  # the dollars as written, not the float's expansion
    for key in ("usage", "num_turns", "duration_ms", "duration_api_ms", "is_error", "subtype"):
        if key in payload:
            change.latest_meta(key, payload[key], at)


Handler = Callable[[SessionChange, dict[str, Any], datetime, Row, Projection], None]
HANDLERS: dict[str, Handler] = {
    "session_start": _session_start,
    "status": _status,
    "session_end": _session_end,
    "subagent_start": _subagent_start,
    "subagent_stop": _subagent_stop,
    "post_tool_use": _post_tool_use,
    "result": _result,
}


# Plain dicts of the classification's tables: looked up for every event.
_SEARCHED = frozenset(cls.SEARCH_FIELDS)
_HANDLERS_OF = {event: HANDLERS[name] for event, name in cls.HANDLED_EVENTS.items()}
# The handled events whose handler reads the payload only for a write tool's call, and all the others.
_WRITE_HANDLED = frozenset(event for event, name in cls.HANDLED_EVENTS.items() if name == "post_tool_use")
_HANDLED_WHOLE = frozenset(cls.HANDLED_EVENTS) - _WRITE_HANDLED


class CallFields(msgspec.Struct, gc=False):
    """What the projections read of a tool call event's payload while its search document is deferred: its
    session's directory and transcript, and the call's id for the summary. Decoded without the rest (the
    tool's input and output), about a sixth of the cost of the whole payload; any JSON value, as read."""

    cwd: object = None
    transcript_path: object = None
    tool_use_id: object = None


_call_fields = msgspec.json.Decoder(CallFields).decode


def decode_call_fields(payload: bytes) -> Any:
    """A tool call event's :class:`CallFields`; a payload that is no JSON object, decoded whole."""
    try:
        return _call_fields(payload)
    except msgspec.ValidationError:  # an array or a scalar: read as it is, as project() reads any payload
        return blobs.decode(payload)


def payload_decoder(row: Row, defer_search: bool = False) -> Callable[[bytes], Any] | None:
    """How :func:`project` reads this row's payload: ``None`` (its columns suffice), ``decode_call_fields``
    (a tool call while search is deferred, not a write's: only :class:`CallFields`), or ``blobs.decode``."""
    if row.session_id is None:
        return None
    event_type = row.event_type
    writes = event_type in _WRITE_HANDLED and row.tool_name in cls.WRITE_TOOLS  # its report reads the input
    if event_type in summary.CALL_EVENTS:  # whole for its search document, or a write's report
        return decode_call_fields if defer_search and not writes else blobs.decode
    if writes or event_type in _HANDLED_WHOLE or (not defer_search and event_type in _SEARCHED):
        return blobs.decode
    return None


def project(
    rows: Sequence[Row],
    payloads: Sequence[Any] | None = None,
    out: Projection | None = None,
    defer_search: bool = False,
) -> Projection:
    """Aggregate the new rows of a batch into the changes they make (added to ``out``: a batch can be
    projected a part at a time, with the same outcome).

    ``payloads`` holds each row's payload already decoded, wherever and as :func:`payload_decoder` says it
    is read (so a payload is parsed once on its way); without it they are decoded here. ``defer_search``: the
    searchable rows are listed in ``deferred`` instead of making search parts (``search_backlog``).
    """
    out = Projection() if out is None else out
    hours, sessions, calls = out.hours, out.sessions, out.calls
    for hour, count in summary.count_hours(rows).items():
        hours[hour] = hours.get(hour, 0) + count
    for index, row in enumerate(rows):
        session_id = row.session_id
        if session_id is None:
            continue
        at = row.occurred_at
        key = (row.tenant_id, session_id)
        change = sessions.get(key)
        if change is None:
            change = sessions[key] = SessionChange(row.tenant_id, session_id, at, at)
        elif at < change.started_at:
            change.started_at = at
        elif at > change.updated_at:
            change.updated_at = at
        change.event_count += 1
        event_type = row.event_type
        if defer_search and event_type in _SEARCHED:
            out.deferred.append(row)
        if payloads is not None:
            payload = payloads[index]  # None where the payload is not read
        elif (decoder := payload_decoder(row, defer_search)) is not None:
            payload = decoder(row.payload)
        else:
            continue
        if type(payload) is CallFields:  # a tool call's, its search deferred: all there is to read of it
            if change.cwd is None:
                change.cwd = _str(payload.cwd)
            if change.transcript_path is None:
                change.transcript_path = _str(payload.transcript_path)
            summary.add_call(calls, session_id, row, payload.tool_use_id)
            continue
        if not isinstance(payload, dict):
            continue  # a JSON array or scalar payload says nothing about the session
        if change.cwd is None:
            change.cwd = _str(payload.get("cwd"))
        if change.transcript_path is None:
            change.transcript_path = _str(payload.get("transcript_path"))
        if event_type in _SEARCHED and not defer_search:
            doc = search.document(row, payload)
            if doc is not None:
                out.search.append(doc)
        if event_type in summary.CALL_EVENTS:
            summary.add_call(calls, session_id, row, payload.get("tool_use_id"))
        if (handler := _HANDLERS_OF.get(event_type)) is not None:
            handler(change, payload, at, row, out)
    return out


# -- Reading files ------------------------------------------------------------------------------------


class SingleFlight(Generic[K, V]):
    """Concurrent requests for the same key share one in-flight computation (the seed's SessionCache).

    The pending entry is removed in ``finally``, so a failure is seen by every waiter of that flight
    and the next request tries again.
    """

    def __init__(self) -> None:
        self._pending: dict[K, trio.Event] = {}
        self._results: dict[K, V | BaseException] = {}

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        if key in self._results:
            return self._unwrap(self._results[key])
        pending = self._pending.get(key)
        if pending is not None:
            await pending.wait()
            return self._unwrap(self._results[key])
        event = self._pending[key] = trio.Event()
        try:
            self._results[key] = await compute()
        except Exception as exc:
            self._results[key] = exc
            raise
        finally:
            del self._pending[key]
            event.set()
        return self._unwrap(self._results[key])

    @staticmethod
    def _unwrap(value: V | BaseException) -> V:
        if isinstance(value, BaseException):
            raise value
        return value


def read_owned_text(path: str, owner_uid: int | None) -> str | None:
    """The UTF-8 text of ``path`` if it is a regular file owned by ``owner_uid`` and small enough."""
    if owner_uid is None or not os.path.isabs(path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) and st.st_uid == owner_uid and st.st_size <= cls.MAX_FILE_BYTES):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            text = f.read(cls.MAX_FILE_BYTES + 1).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if "\x00" in text else text  # a binary file: no report or state a text column holds


def state_files(cwd: str, agent_type: str | None) -> list[str]:
    """The state files of an agent type under ``cwd``, by the configured globs."""
    globs = [*cls.STATE_FILE_GLOBS["*"], *cls.STATE_FILE_GLOBS.get(agent_type or "", ())]
    found: list[str] = []
    base = Path(cwd)
    for pattern in globs:
        found.extend(str(p) for p in sorted(base.glob(pattern)) if p.is_file() and not p.is_symlink())
    return list(dict.fromkeys(found))[: cls.MAX_STATE_FILES]


async def read_files(projection: Projection) -> None:
    """Fill in report contents and agent state files, reading concurrently, each file once."""
    reads: SingleFlight[tuple[str, int | None], str | None] = SingleFlight()

    async def read(path: str, owner: int | None) -> str | None:
        return await reads.get((path, owner), lambda: trio.to_thread.run_sync(read_owned_text, path, owner))

    async def report(write: ReportWrite) -> None:
        write.content = await read(write.path, write.owner_uid) or write.inline

    async def state(item: StateRead) -> None:
        if item.owner_uid is None:
            return
        paths = await trio.to_thread.run_sync(state_files, item.cwd, item.agent_type)
        for path in paths:
            if (text := await read(path, item.owner_uid)) is not None:
                item.files[path] = text

    async with trio.open_nursery() as nursery:
        for write in projection.reports.values():
            nursery.start_soon(report, write)
        for item in projection.states:
            nursery.start_soon(state, item)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def word_count(text: str) -> int:
    return len(text.split())
