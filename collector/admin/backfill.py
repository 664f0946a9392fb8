"""Backfill: past sessions turned into the hook events live capture would have recorded.

Two sources, each read as a stream (one line or one file at a time, so a 1 GB transcript never sits in
memory) and mapped to hook-input payloads: the same event types, fields and tables as live events.
``backfill_cli`` writes them straight to PostgreSQL or through a running collector, with source
``backfill``.

**Claude Code transcripts** (``~/.claude/projects/<project>/<session-id>.jsonl``; subagents in
``<session-id>/subagents/agent-<agent-id>.jsonl``, or ``agent-*.jsonl`` beside the session in older
versions). A session is one unit: its main transcript, then its subagent transcripts, then the events
only the end can tell. ``session_id`` is the file name (what live hooks report); ``transcript_path``
the main transcript; ``cwd`` each line's own; ``occurred_at`` the line's ``timestamp``.

====================================  =======================================================================
transcript line                       events
====================================  =======================================================================
first line with a uuid (main chain)   ``SessionStart`` (``source: "backfill"``, ``model`` of the first
                                      assistant message, ``session_title`` from a ``summary`` line read
                                      before it); emitted once the model is known, at the first line's time
``user``, text (string or blocks)     ``UserPromptSubmit`` (``prompt``); nothing in a subagent (its task
                                      prompt is not a user prompt)
``assistant``, ``tool_use`` block     ``PreToolUse`` (``tool_name``, ``tool_input``, ``tool_use_id``)
``user``, ``tool_result`` block       ``PostToolUse`` (``tool_response``: the line's ``toolUseResult``, else
                                      the block's content), or ``PostToolUseFailure`` (``error``,
                                      ``is_interrupt``) when ``is_error``; ``tool_name`` and ``tool_input``
                                      from the paired ``tool_use``, ``duration_ms`` between the two lines
a turn's last assistant line          ``Stop`` (``last_assistant_message``), or ``StopFailure`` when that line
(seen at the next prompt or the end)  is an API error message
``system`` ``compact_boundary``       ``PreCompact`` (``trigger``)
a subagent's first / last line        ``SubagentStart`` / ``SubagentStop`` (``agent_id``; ``agent_type`` from
(``agentId``, ``isSidechain``, or     the parent's ``Agent``/``Task`` call; ``agent_transcript_path``,
its ``agent-*.jsonl``)                ``last_assistant_message``); its tool events carry both agent fields
the main chain's last line            ``Result`` (``usage`` summed over main and subagent messages,
                                      ``duration_ms``, ``model``), then ``SessionEnd`` (``reason``:
                                      ``"backfill"``)
lines without a uuid (``summary``,    nothing, and not malformed; ``isMeta``, compact-summary, interruption
``file-history-snapshot``, ...),      and local-command-output user lines are not prompts
other ``system`` lines
====================================  =======================================================================

Decisions:

- **Event ids** are UUIDv5 of :data:`NAMESPACE` and ``<session id> <line uuid>/<event type>[/<tool use
  id>]``: a re-run, or a run over a copy, yields the same ids, and ``(tenant, event_id, occurred_at)``
  makes them one row. The session id is part of the name because a resumed or forked session's
  transcript repeats its parent's lines with their uuids: each session keeps its whole history.
- **Usage** is counted once per ``message.id`` (a message streamed over several lines repeats its
  usage on each; the last line's figures win), keeping the latest 1024 open ids. ``total_cost_usd`` is
  left out of ``Result``: the cost is the usage ledger's, which the store computes from the transcripts
  the events name, per request, as for a live session (``backfill_cli``, ``store/ledger.py``).
- **Pairing** keeps at most 10 000 unanswered tool uses per session; a result whose use was dropped or
  never written is still imported, without ``tool_name`` (counted as unpaired).
- **Turn ends** come from the next prompt (or the end) rather than ``stop_reason``, which recent
  Claude Code versions leave null in transcripts.
- **Malformed lines** (not UTF-8 JSON, not an object, a uuid without a valid timestamp, a user or
  assistant line without a message object) are counted and reported as ``path:line: reason``; the
  rest of the file is imported. A final line still being written is reported the same way.
- Strings holding U+0000 are kept as they are: the store keeps them losslessly (``store/blobs``).
- A session still being written is imported as far as it goes, and ends there (``SessionEnd``); a
  later run adds what followed, with another ``Stop``/``Result``/``SessionEnd`` at its new end.

**Session directories** (seed style: ``DIR/<session-id>/``, markdown reports under ``reports/``, JSON
state files): each subdirectory is a session, its name the session id, its path the ``cwd``; times are
file modification times.

====================================  =======================================================================
session directory                     events
====================================  =======================================================================
the directory (oldest file's mtime)   ``SessionStart`` (``source: "backfill"``)
``reports/**/*.md`` (its mtime)       ``PostToolUse`` of ``Write`` with ``file_path`` and the text as
                                      ``tool_input.content`` (the report projection stores it)
the state files ``STATE_FILE_GLOBS``  ``SubagentStop`` (``cwd``: the directory), one per agent type whose own
match (the newest one's mtime)        globs match, else one without a type: the projection reads the files,
                                      as for a live SubagentStop
the directory (newest file's mtime)   ``SessionEnd`` (``reason: "backfill"``)
====================================  =======================================================================

The agent_states projection reads state files from disk only on behalf of a sender's uid that owns
them, so these events are written with the backfill process's own pid/uid/gid as the peer (what a
collector would record for them over its socket). ``*.json`` files no glob matches, state files owned
by another user and files over ``MAX_FILE_BYTES`` are reported as skipped. Event ids of files include
their mtime: a report changed since the last run is a new write.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from hookdb.collector import classification as cls
from hookdb.collector.store.projections import state_files

NAMESPACE = uuid.UUID("b16dda39-4780-521e-a0e2-5d3a64f30447")  # uuid5(NAMESPACE_URL, "hookdb:backfill")
SOURCE = "backfill"
END_REASON = "backfill"
MAX_PENDING_TOOL_USES = 10_000
MAX_OPEN_MESSAGES = 1024
USAGE_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
SIDECHAIN = "sidechain"  # the agent of inline sidechain lines that name none (older transcripts)
_SYNTHETIC_MODEL = "<synthetic>"  # Claude Code's own messages (errors, interruptions)
_INTERRUPTED = "[Request interrupted by user"
_NOT_PROMPTS = (_INTERRUPTED, "<local-command-stdout>", "<local-command-stderr>")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Event(NamedTuple):
    """One hook event, ready for an envelope; ``path``/``line`` say where it came from."""

    event_id: str
    event_type: str
    session_id: str
    occurred_at_ns: int
    payload: bytes  # the hook input, UTF-8 JSON
    path: str
    line: int  # 0 for an event derived from a whole file

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass
class Tally:
    """What a run did, for the progress line and the summary; problems are kept up to ``max_listed``."""

    files_total: int = 0
    files_done: int = 0
    sessions: int = 0
    sessions_skipped: int = 0  # already captured live
    events: int = 0  # handed to the writer
    written: int = 0  # new rows (direct mode)
    acknowledged: int = 0  # spooled by the collector (socket mode)
    malformed: int = 0
    skipped: int = 0  # files, or events that cannot be stored or sent
    unpaired: int = 0
    usage_skipped: int = 0  # transcripts another uid owns: the ledger does not read them
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    max_listed: int = 20

    def bad_line(self, path: str, line: int, reason: str) -> None:
        self.malformed += 1
        self._note(f"{path}:{line}: {reason}")

    def skip(self, where: str, reason: str) -> None:
        self.skipped += 1
        self._note(f"{where}: {reason}")

    def usage_unread(self, where: str, uid: int) -> None:
        """A transcript whose events are imported but whose usage the store will not read (not ours)."""
        self.usage_skipped += 1
        self._note(
            f"{where}: owned by uid {uid}: its events are imported, its usage is not (the ledger reads only "
            "the sender's own transcripts; run the backfill as their owner)"
        )

    def _note(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self.max_listed:
            self.problems.append(text)


def valid_label(value: str) -> bool:
    """Whether ``value`` can be an envelope's session id or tenant (1–256 characters, no U+0000)."""
    return 0 < len(value) <= 256 and "\x00" not in value


# -- Line and payload helpers ------------------------------------------------------------------------------

_decode_line = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _parse(raw: bytes) -> Any:
    try:
        return _decode_line(raw)
    except msgspec.ValidationError:  # a number msgspec cannot hold (1e400): the stdlib reads it
        return json.loads(raw)


def _ns(stamp: Any) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 timestamp; a stamp without a zone is UTC."""
    if not isinstance(stamp, str):
        return None
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _text(content: Any) -> str | None:
    """The text of a message's content: a string, or the text blocks of a list joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
        return "\n".join(parts) if parts else None
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def event_id(session_id: str, key: str) -> str:
    """The deterministic id of the event ``key`` names within ``session_id``."""
    return str(uuid.uuid5(NAMESPACE, f"{session_id} {key}"))


# -- Transcript mapping ------------------------------------------------------------------------------------


class _Line(NamedTuple):
    uuid: str
    ns: int
    cwd: str | None
    path: str
    number: int


class _ToolUse(NamedTuple):
    name: Any
    input: Any
    ns: int


@dataclass
class _Chain:
    """The main conversation or one subagent: where it starts, where it is, how its turn stands."""

    agent_id: str | None
    transcript: str
    first: _Line | None = None
    last: _Line | None = None
    cwd: str | None = None
    last_assistant: _Line | None = None
    last_text: str | None = None
    api_error: str | None = None  # the error of the turn's last assistant line, if it was one
    turn_open: bool = False


class SessionMapper:
    """Maps the lines of one session's transcripts to hook events; pure, no I/O.

    Feed every line of the main transcript, then of each subagent transcript, then call
    :meth:`finish` for the events only the end can tell.
    """

    def __init__(self, session_id: str, transcript_path: str, tally: Tally) -> None:
        self.session_id = session_id
        self.transcript_path = transcript_path
        self._tally = tally
        self._main = _Chain(None, transcript_path)
        self._agents: dict[str, _Chain] = {}
        self._agent_types: dict[str, str] = {}  # agent id → subagent_type of the call that ran it
        self._pending: OrderedDict[str, _ToolUse] = OrderedDict()
        self._open_usage: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._usage = dict.fromkeys(USAGE_KEYS, 0)
        self._usage_seen = False
        self._model: str | None = None
        self._title: str | None = None
        self._start_pending = False
        self._prompt_id: str | None = None
        self._permission_mode: str | None = None

    # The events -------------------------------------------------------------------------------------------

    def _event(self, name: str, key: str, at: _Line, payload: dict[str, Any]) -> Event:
        return Event(
            event_id(self.session_id, key),
            name,
            self.session_id,
            at.ns,
            _encode(payload),
            at.path,
            at.number,
        )

    def _base(self, name: str, chain: _Chain, cwd: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "session_id": self.session_id,
            "transcript_path": self.transcript_path,
            "cwd": cwd or chain.cwd or self._main.cwd,
        }
        if chain.agent_id is None:
            if self._prompt_id:
                payload["prompt_id"] = self._prompt_id
            if self._permission_mode:
                payload["permission_mode"] = self._permission_mode
        payload["hook_event_name"] = name
        return payload

    def _agent_fields(self, payload: dict[str, Any], chain: _Chain) -> dict[str, Any]:
        if chain.agent_id is not None:
            payload["agent_id"] = chain.agent_id
            payload["agent_type"] = self._agent_types.get(chain.agent_id)
        return payload

    def _session_start(self) -> Event:
        first = self._main.first
        assert first is not None
        self._start_pending = False
        payload = self._base("SessionStart", self._main, first.cwd)
        payload.pop("prompt_id", None)
        payload["source"] = SOURCE
        if self._model:
            payload["model"] = self._model
        if self._title:
            payload["session_title"] = self._title
        return self._event("SessionStart", f"{first.uuid}/SessionStart", first, payload)

    def _close_turn(self) -> list[Event]:
        chain = self._main
        at = chain.last_assistant
        if not chain.turn_open or at is None:
            return []
        chain.turn_open = False
        if chain.api_error is not None:
            payload = self._base("StopFailure", chain, at.cwd)
            payload["error"] = chain.api_error
            payload["last_assistant_message"] = chain.last_text
            return [self._event("StopFailure", f"{at.uuid}/Stop", at, payload)]
        payload = self._base("Stop", chain, at.cwd)
        payload["stop_hook_active"] = False
        payload["last_assistant_message"] = chain.last_text
        return [self._event("Stop", f"{at.uuid}/Stop", at, payload)]

    # Lines ------------------------------------------------------------------------------------------------

    def feed(self, raw: bytes, path: str, number: int, file_agent: str | None = None) -> list[Event]:
        """The events of one transcript line; ``file_agent`` is the agent of a subagent transcript."""
        if not raw or raw.isspace():
            return []
        try:
            line = _parse(raw)
        except ValueError as exc:  # msgspec.DecodeError, json.JSONDecodeError, UnicodeDecodeError
            self._tally.bad_line(path, number, f"not JSON: {exc}")
            return []
        if not isinstance(line, dict):
            self._tally.bad_line(path, number, "not a JSON object")
            return []
        kind = line.get("type")
        if kind == "summary" and self._title is None:
            self._title = _str(line.get("summary"))
        uid = line.get("uuid")
        if not isinstance(uid, str):
            return []  # summaries, file-history snapshots, queue operations: no hook fired for them
        ns = _ns(line.get("timestamp"))
        if ns is None:
            self._tally.bad_line(path, number, f"no valid timestamp: {line.get('timestamp')!r}")
            return []
        message = line.get("message")
        if kind in ("user", "assistant") and not isinstance(message, dict):
            self._tally.bad_line(path, number, f"a {kind} line without a message object")
            return []

        agent_id = _str(line.get("agentId")) or file_agent
        if agent_id is None and line.get("isSidechain") is True:
            agent_id = SIDECHAIN
        cwd = _str(line.get("cwd"))
        at = _Line(uid, ns, cwd, path, number)
        out: list[Event] = []
        if agent_id is None:
            chain = self._main
            if chain.first is None:
                chain.first = at
                self._start_pending = True
        else:
            chain = self._agents.get(agent_id) or self._agents.setdefault(agent_id, _Chain(agent_id, path))
            if chain.first is None:
                chain.first = at
                chain.cwd = cwd
                payload = self._agent_fields(self._base("SubagentStart", chain, cwd), chain)
                out.append(self._event("SubagentStart", f"{uid}/SubagentStart/{agent_id}", at, payload))
        chain.last = at
        chain.cwd = cwd or chain.cwd
        if chain.agent_id is None:
            self._permission_mode = _str(line.get("permissionMode")) or self._permission_mode

        if kind == "assistant":
            out += self._assistant(line, message, chain, at)
        elif kind == "user":
            out += self._user(line, message, chain, at)
        elif kind == "system" and line.get("subtype") == "compact_boundary" and chain.agent_id is None:
            meta = line.get("compactMetadata")
            payload = self._base("PreCompact", chain, cwd)
            payload["trigger"] = meta.get("trigger") if isinstance(meta, dict) else None
            payload["custom_instructions"] = None
            out.append(self._event("PreCompact", f"{uid}/PreCompact", at, payload))
        if self._start_pending and self._model is not None:
            out.append(self._session_start())
        return out

    def _assistant(
        self, line: dict[str, Any], message: dict[str, Any], chain: _Chain, at: _Line
    ) -> list[Event]:
        model = _str(message.get("model"))
        if self._model is None and chain.agent_id is None and model and model != _SYNTHETIC_MODEL:
            self._model = model
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._count_usage(_str(message.get("id")) or at.uuid, usage)
        out: list[Event] = []
        content = message.get("content")
        for i, block in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(block, dict) or block.get("type") != "tool_use":
                continue
            tool_use_id = _str(block.get("id"))
            name, tool_input = block.get("name"), block.get("input")
            if tool_use_id is not None:
                self._pending[tool_use_id] = _ToolUse(name, tool_input, at.ns)
                if len(self._pending) > MAX_PENDING_TOOL_USES:
                    self._pending.popitem(last=False)
            payload = self._base("PreToolUse", chain, at.cwd)
            payload.update(tool_name=name, tool_input=tool_input, tool_use_id=tool_use_id)
            key = f"{at.uuid}/PreToolUse/{tool_use_id or i}"
            out.append(self._event("PreToolUse", key, at, self._agent_fields(payload, chain)))
        chain.turn_open = True
        chain.last_assistant = at
        chain.last_text = _text(content) or chain.last_text
        chain.api_error = (_str(line.get("error")) or "api_error") if line.get("isApiErrorMessage") else None
        return out

    def _user(self, line: dict[str, Any], message: dict[str, Any], chain: _Chain, at: _Line) -> list[Event]:
        content = message.get("content")
        results = (
            [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            if isinstance(content, list)
            else []
        )
        if results:
            only = len(results) == 1
            return [self._tool_result(line, block, i, only, chain, at) for i, block in enumerate(results)]
        prompt = _text(content)
        if (
            chain.agent_id is not None
            or prompt is None
            or line.get("isMeta")
            or line.get("isCompactSummary")
            or prompt.startswith(_NOT_PROMPTS)
        ):
            return []
        out = self._close_turn()
        chain.last_text = None
        self._prompt_id = _str(line.get("promptId"))
        payload = self._base("UserPromptSubmit", chain, at.cwd)
        payload["prompt"] = prompt
        out.append(self._event("UserPromptSubmit", f"{at.uuid}/UserPromptSubmit", at, payload))
        return out

    def _tool_result(
        self, line: dict[str, Any], block: dict[str, Any], index: int, only: bool, chain: _Chain, at: _Line
    ) -> Event:
        tool_use_id = _str(block.get("tool_use_id"))
        use = self._pending.pop(tool_use_id, None) if tool_use_id else None
        # toolUseResult is the tool's structured result (what hooks get); it describes a line's only result.
        response = line["toolUseResult"] if only and "toolUseResult" in line else block.get("content")
        failed = block.get("is_error") is True
        name = "PostToolUseFailure" if failed else "PostToolUse"
        payload = self._base(name, chain, at.cwd)
        if use is None:
            self._tally.unpaired += 1
        else:
            payload.update(tool_name=use.name, tool_input=use.input)
        payload["tool_use_id"] = tool_use_id
        if failed:
            error = _text(block.get("content")) or (response if isinstance(response, str) else None)
            payload["error"] = error
            payload["is_interrupt"] = bool(error and error.startswith(_INTERRUPTED))
        else:
            payload["tool_response"] = response
        if use is not None:
            payload["duration_ms"] = max(at.ns - use.ns, 0) // 1_000_000
            agent = response.get("agentId") if isinstance(response, dict) else None
            subagent_type = use.input.get("subagent_type") if isinstance(use.input, dict) else None
            if isinstance(agent, str) and isinstance(subagent_type, str):
                self._agent_types[agent] = subagent_type
        key = f"{at.uuid}/PostToolUse/{tool_use_id or index}"
        return self._event(name, key, at, self._agent_fields(payload, chain))

    def _count_usage(self, message_id: str, usage: dict[str, Any]) -> None:
        self._usage_seen = True
        self._open_usage[message_id] = usage
        self._open_usage.move_to_end(message_id)
        if len(self._open_usage) > MAX_OPEN_MESSAGES:
            self._add_usage(self._open_usage.popitem(last=False)[1])

    def _add_usage(self, usage: dict[str, Any]) -> None:
        for key in USAGE_KEYS:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                self._usage[key] += value

    # The end ----------------------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """The events the end of the session tells: its start (if the model never showed), subagent
        stops, the last turn's stop, the usage result and the session's end."""
        out: list[Event] = []
        if self._start_pending:
            out.append(self._session_start())
        for chain in self._agents.values():
            if chain.last is None:
                continue
            payload = self._base("SubagentStop", chain, chain.last.cwd)
            payload["stop_hook_active"] = False
            payload = self._agent_fields(payload, chain)
            payload["agent_transcript_path"] = chain.transcript
            payload["last_assistant_message"] = chain.last_text
            key = f"{chain.last.uuid}/SubagentStop/{chain.agent_id}"
            out.append(self._event("SubagentStop", key, chain.last, payload))
        out += self._close_turn()
        last, first = self._main.last, self._main.first
        if last is None or first is None:
            return out
        for usage in self._open_usage.values():
            self._add_usage(usage)
        self._open_usage.clear()
        self._prompt_id = None  # the session's end belongs to no prompt
        if self._usage_seen:
            payload = self._base("Result", self._main, last.cwd)
            payload["usage"] = self._usage
            payload["duration_ms"] = max(last.ns - first.ns, 0) // 1_000_000
            if self._model:
                payload["model"] = self._model
            out.append(self._event(cls.RESULT_EVENT, f"{last.uuid}/Result", last, payload))
        payload = self._base("SessionEnd", self._main, last.cwd)
        payload["reason"] = END_REASON
        out.append(self._event("SessionEnd", f"{last.uuid}/SessionEnd", last, payload))
        return out


# -- Transcript files --------------------------------------------------------------------------------------


@dataclass
class TranscriptSession:
    """One session's transcripts: the main one (which may be missing) and its subagents'."""

    session_id: str
    main: Path
    subagents: list[Path] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return ([self.main] if self.main.is_file() else []) + self.subagents

    @property
    def file_count(self) -> int:
        return len(self.files)


def _walk(root: Path) -> Iterator[Path]:
    """Regular files under ``root``, in a stable order; symbolic links are not followed."""
    for parent, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(parent, name)
            if not path.is_symlink():
                yield path


def _peek_session_id(path: Path, tally: Tally) -> str | None:
    """The session id a legacy ``agent-*.jsonl`` file names in its first lines."""
    try:
        with path.open("rb") as f:
            for _, raw in zip(range(20), f, strict=False):
                try:
                    line = _parse(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and (sid := _str(line.get("sessionId"))):
                    return sid
    except OSError as exc:
        tally.skip(str(path), f"cannot read: {exc.strerror}")
        return None
    tally.skip(str(path), "a subagent transcript that names no session")
    return None


def find_transcripts(root: Path, tally: Tally) -> list[TranscriptSession]:
    """The sessions of the transcripts at ``root`` (a file or a directory searched recursively)."""
    root = root.absolute()
    sessions: dict[Path, TranscriptSession] = {}

    def session(main: Path) -> TranscriptSession:
        return sessions.get(main) or sessions.setdefault(main, TranscriptSession(main.stem, main))

    paths = [root] if root.is_file() else (p for p in _walk(root) if p.suffix == ".jsonl")
    for path in paths:
        if path.name.startswith("agent-"):
            if path.parent.name == "subagents":
                owner = path.parent.parent
                session(owner.parent / f"{owner.name}.jsonl").subagents.append(path)
            elif sid := _peek_session_id(path, tally):
                session(path.parent / f"{sid}.jsonl").subagents.append(path)
        else:
            session(path)
            if root.is_file():  # a single transcript named on the command line brings its subagents
                found = sorted((path.parent / path.stem / "subagents").glob("agent-*.jsonl"))
                session(path).subagents.extend(found)
    tally.files_total += sum(len(s.files) for s in sessions.values())
    return [sessions[key] for key in sorted(sessions)]


def transcript_events(session: TranscriptSession, tally: Tally) -> Iterator[Event]:
    """Stream the events of one session's transcripts, one line at a time."""
    mapper = SessionMapper(session.session_id, str(session.main), tally)
    for path in session.files:
        file_agent = path.stem.removeprefix("agent-") if path != session.main else None
        name = str(path)
        try:
            f = path.open("rb")
        except OSError as exc:
            tally.skip(name, f"cannot read: {exc.strerror}")
            continue
        with f:
            owner = os.fstat(f.fileno()).st_uid
            if owner != os.geteuid():
                tally.usage_unread(name, owner)
            for number, raw in enumerate(f, 1):
                yield from mapper.feed(raw, name, number, file_agent)
        tally.files_done += 1
    yield from mapper.finish()


# -- Session directories -----------------------------------------------------------------------------------


@dataclass
class SeedSession:
    session_id: str
    directory: Path
    file_count = 1  # progress counts session directories


def find_seed_sessions(root: Path, tally: Tally) -> list[SeedSession]:
    """Each subdirectory of ``root`` is a session named by the directory (hidden ones are not)."""
    root = root.absolute()
    found = [
        SeedSession(p.name, p)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
    ]
    tally.files_total += len(found)
    return found


def _seed_event(
    session: SeedSession, name: str, key: str, ns: int, payload: dict[str, Any], path: Path
) -> Event:
    body: dict[str, Any] = {"session_id": session.session_id, "cwd": str(session.directory)}
    body["hook_event_name"] = name
    body.update(payload)
    return Event(event_id(session.session_id, key), name, session.session_id, ns, _encode(body), str(path), 0)


def _read_report(path: Path, tally: Tally) -> str | None:
    try:
        with path.open("rb") as f:
            data = f.read(cls.MAX_FILE_BYTES + 1)
    except OSError as exc:
        tally.skip(str(path), f"cannot read: {exc.strerror}")
        return None
    if len(data) > cls.MAX_FILE_BYTES:
        tally.skip(str(path), f"larger than {cls.MAX_FILE_BYTES} bytes (classification.MAX_FILE_BYTES)")
        return None
    return data.decode("utf-8", errors="replace")


def _state_groups(directory: Path) -> list[tuple[str | None, list[str]]]:
    """(agent type, files) for each SubagentStop the state files need: one per agent type whose own globs
    match (it reads the common globs too), else one without a type for the common globs."""
    common = state_files(str(directory), None)
    typed: list[tuple[str | None, list[str]]] = []
    for kind in cls.STATE_FILE_GLOBS:
        files = state_files(str(directory), kind) if kind != "*" else []
        if set(files) - set(common):
            typed.append((kind, files))
    if typed:
        return typed
    return [(None, common)] if common else []


def seed_events(session: SeedSession, tally: Tally) -> Iterator[Event]:
    """The events of one session directory, from its files and their modification times."""
    directory = session.directory
    mtimes: dict[Path, int] = {}
    owners: dict[Path, int] = {}
    for path in _walk(directory):
        try:
            st = path.stat()
        except OSError as exc:
            tally.skip(str(path), f"cannot stat: {exc.strerror}")
            continue
        mtimes[path], owners[path] = st.st_mtime_ns, st.st_uid
    tally.files_done += 1
    if not mtimes:
        return
    start, end = min(mtimes.values()), max(mtimes.values())
    yield _seed_event(
        session, "SessionStart", f"seed/SessionStart/{start}", start, {"source": SOURCE}, directory
    )

    reports = directory / "reports"
    for path, ns in mtimes.items():
        if path.suffix != ".md" or not path.is_relative_to(reports):
            continue
        content = _read_report(path, tally)
        if content is None:
            continue
        name = str(path)
        payload = {
            "tool_name": "Write",
            "tool_input": {"file_path": name, "content": content},
            "tool_response": {"filePath": name, "success": True},
        }
        key = f"seed/report/{path.relative_to(directory)}/{ns}"
        yield _seed_event(session, "PostToolUse", key, ns, payload, path)

    covered: set[Path] = set()
    uid = os.getuid()
    for agent_type, files in _state_groups(directory):
        paths = [Path(f) for f in files]
        covered.update(paths)
        for path in paths:
            if owners.get(path, uid) != uid:
                tally.skip(str(path), "a state file owned by another user: run the backfill as its owner")
        ns = max(mtimes.get(p, start) for p in paths)
        payload: dict[str, Any] = {"stop_hook_active": False}
        if agent_type:
            payload["agent_type"] = agent_type
        key = f"seed/state/{agent_type or '*'}/{ns}"
        yield _seed_event(session, "SubagentStop", key, ns, payload, directory)
    for path in mtimes:
        if path.suffix == ".json" and path not in covered:
            tally.skip(str(path), "not a state file: no classification.STATE_FILE_GLOBS pattern matches it")

    payload = {"reason": END_REASON}
    yield _seed_event(session, "SessionEnd", f"seed/SessionEnd/{end}", end, payload, directory)


def session_ids(units: Iterable[TranscriptSession | SeedSession]) -> list[str]:
    return list(dict.fromkeys(u.session_id for u in units))
