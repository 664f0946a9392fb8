"""A session as a file to keep: ``GET /api/sessions/{id}/export`` as JSON (the detail with every event) or as
a Markdown document a person reads. Sans-io writers: the app feeds them the session, then the timeline a
page at a time (so a long session never sits in memory whole), and sends what they return.

The Markdown lists the card's facts, the reports' own markdown inline, and the timeline one line per
event, a tool call (PreToolUse and its PostToolUse or PostToolUseFailure) as one line at the call's start
with what it did (the command, the path, the pattern), how long it took and, for a failure, its error.
The line is written when the call's end is read (the end carries the input too, and the error), so no
page needs the next one.

Subagents are nested as in the web timeline (collector/web/timeline.js): what a subagent fires carries its
``agent_id``; its events go under a line naming it (type, task, duration, requests, tokens and cost), right
after the line of the Agent (or Task) call that started it (the one whose result names it; a result that
names none takes the first of its type that started while it ran), in the list of the agent that made
that call, one level deeper: nested subagents nest again, and subagents that ran at once never mix. A
subagent's lines are held until its place is written, within a bound (:class:`MarkdownWriter` says what
happens past it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec
from msgspec import UNSET

from hookdb.collector import classification as cls
from hookdb.collector.api import payloads
from hookdb.collector.api.models import AgentUsage, SessionCard, SessionExport, TimelineEvent
from hookdb.collector.store import blobs

_encode = msgspec.json.Encoder(decimal_format="number").encode
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TICKS = re.compile(r"`+")
DETAIL_CHARS = 300  # a tool input or an error shown inline beyond this is cut (the JSON export has it all)
BUFFER_CHARS = 1_000_000  # of subagents' lines held for their place (past it they are written in parts)
MAIN = "main"  # the agent of events with no agent_id: the session's own (the ledger's name for it too)
AGENT_TOOLS = frozenset({"Agent", "Task"})  # the tool that starts a subagent (older versions: Task)

# The tool input fields that say what a call did, by tool; any other tool shows none.
_WHAT = {
    "Bash": ("command",),
    "Read": ("file_path",),
    "Write": ("file_path",),
    "Edit": ("file_path",),
    "MultiEdit": ("file_path",),
    "NotebookEdit": ("notebook_path",),
    "Grep": ("pattern", "path"),
    "Glob": ("pattern", "path"),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Task": ("subagent_type", "description"),
    "Agent": ("subagent_type", "description"),
}


def filename(session_id: str, extension: str) -> str:
    """An attachment name any file system and browser takes: the session id's safe characters only."""
    safe = _UNSAFE.sub("_", session_id).strip("._")[:80] or "session"
    return f"hookdb-session-{safe}.{extension}"


def content_disposition(session_id: str, extension: str) -> str:
    return f'attachment; filename="{filename(session_id, extension)}"'


class JsonWriter:
    """The JSON document (:class:`SessionExport`) in pieces: the head, the events page by page, the end."""

    def __init__(self) -> None:
        self._written = False

    def head(self, export: SessionExport) -> bytes:
        """Everything but the events (``export.events`` is empty), open for them."""
        text = _encode(export)
        if export.events or not text.endswith(b'"events":[]}'):
            raise ValueError("the head of an export holds no events, and they come last")
        return text[: -len(b"]}")]

    def page(self, events: list[TimelineEvent]) -> bytes:
        if not events:
            return b""
        text = b",".join(_encode(event) for event in events)
        text = b"," + text if self._written else text
        self._written = True
        return text

    def end(self) -> bytes:
        return b"]}"

    def cut(self) -> bytes:
        """After a failure mid-way: nothing, so the document stays unterminated and fails to parse."""
        return b""


class MarkdownWriter:
    """The Markdown document in pieces, as :class:`JsonWriter`.

    The main agent's lines are written as they are read. A subagent's are held until its block can go
    where it belongs: under a line naming it, right after the line of the call that started it (written
    when that call's end is read, after the subagent stopped), in the list of the agent that made the call,
    its events one level deeper; the blocks of the subagents it started are held inside it and nest again.
    So only the lines of subagents not yet placed are held, never the session. Past ``BUFFER_CHARS`` of
    them, every held subagent's lines are written at once, each under its own line that says it continues
    below, and what it does later follows in a part of its own: subagents still never mix, but such a part
    stands apart from the call that started it. A block still held at the end (a subagent that never
    stopped, or whose call is not on record) is written at the end.
    """

    def __init__(self) -> None:
        self._events = 0
        self._out: list[str] = []  # lines of the main agent's list, to send with this piece
        self._subagents: dict[str, _Subagent] = {}  # by agent id, in the order they started
        self._calls: dict[str, _Call] = {}  # open Agent/Task calls by tool_use_id
        self._named: dict[str, _Call] = {}  # ended calls whose result named a subagent not seen yet
        self._usage: dict[str, AgentUsage] = {}
        self._held = 0  # characters of subagents' lines held

    def head(self, export: SessionExport) -> bytes:
        card = export.session
        self._usage = {agent.agent: agent for agent in export.agents}
        lines = [f"# {_one_line(card.title or card.session_id)}", "", *_facts(card), ""]
        if export.reports:
            lines += ["## Reports", ""]
            for report in export.reports:
                lines += [
                    f"### {_code(report.path)} ({report.report_type}, {report.word_count} words)",
                    "",
                    report.content.rstrip("\n"),
                    "",
                    "---",
                    "",
                ]
        lines += [f"Exported by hookdb at {export.exported_at.isoformat()}.", "", "## Timeline", ""]
        return _text(lines)

    def page(self, events: list[TimelineEvent]) -> bytes:
        self._events += len(events)
        for event in events:
            self._read(event)
        return self._send()

    def end(self) -> bytes:
        self._finish()
        return self._send() + (b"" if self._events else _text(["No events."]))

    def cut(self) -> bytes:
        self._finish()
        notice = ["", f"**The export was cut short after {self._events} events: the database failed.**"]
        return self._send() + _text(notice)

    def _send(self) -> bytes:
        text = _text(self._out)
        self._out = []
        return text

    def _read(self, event: TimelineEvent) -> None:
        payload, problem = _decoded(event)
        body = payload if isinstance(payload, dict) else {}
        agent = _str(body.get("agent_id")) or MAIN
        sub = self._subagent(agent, event, body) if agent != MAIN else None
        tool = event.tool_name or _str(body.get("tool_name"))
        call_id = event.tool_use_id if tool in AGENT_TOOLS else None
        if call_id is not None and event.event_type == cls.TOOL_CALL_START:
            ends = event.paired_event_id is not None
            self._calls[call_id] = _Call.of(call_id, agent, event.occurred_at, body, ends=ends)
        lines = _event_lines(event, payload)
        if problem is not None and lines:
            lines[0] += f" — *payload partly shown: {problem} (the JSON export has it all)*"
        self._write(agent, lines)
        if call_id is not None and event.event_type in cls.TOOL_CALL_END:
            self._call_ended(call_id, agent, event, body)
        elif event.event_type == "PermissionDenied":  # a denied call starts nothing
            self._calls.pop(_str(body.get("tool_use_id")) or "", None)
        if sub is not None:
            if event.event_type == "SubagentStop":
                sub.stopped = event.occurred_at
            self._settle(sub)
        if self._held > BUFFER_CHARS:
            self._spill()

    def _subagent(self, agent: str, event: TimelineEvent, body: dict[str, Any]) -> _Subagent:
        """The subagent ``agent``. Seen first, it is placed if its call's line is written already (a call
        that named it, or one with no end on record), or if no call can have started it; else its parent
        is guessed (the agent of the earliest open call of its type) until a call's end places it."""
        sub = self._subagents.get(agent)
        if sub is None:
            sub = self._subagents[agent] = _Subagent(agent, event.occurred_at, _str(body.get("agent_type")))
            named = self._named.pop(agent, None)
            call = named or next(
                (c for c in self._calls.values() if c.agent != agent and c.fits(sub.type)), None
            )
            if call is None:
                sub.placed = True  # started by a call not on record: in the main list
            elif named is None and call.ends:
                sub.parent = call.agent
            else:
                self._calls.pop(call.tool_use_id, None)
                self._place(sub, call)
        if event.event_type == "SubagentStart" and not sub.start_seen:
            sub.started, sub.start_seen = event.occurred_at, True
        sub.type = sub.type or _str(body.get("agent_type"))
        return sub

    def _call_ended(self, call_id: str, agent: str, event: TimelineEvent, body: dict[str, Any]) -> None:
        """An Agent/Task call's line is written: the subagent it started goes after it. That is the one its
        result names, else the earliest not yet placed of its type that started while it was open."""
        started = event.occurred_at - timedelta(milliseconds=event.duration_ms or 0)
        call = _Call.of(call_id, agent, started, body, ends=True)
        opened = self._calls.pop(call_id, None)
        if opened is not None:  # its start says what its end may not
            call = replace(call, type=call.type or opened.type, task=call.task or opened.task)
        response = body.get("tool_response")
        named = _str(response.get("agentId")) if isinstance(response, dict) else None
        if named is not None:
            sub = self._subagents.get(named)
            if sub is None and named != agent:
                self._named[named] = call  # it runs on (in the background): placed when it is seen
        else:
            sub = next(
                (
                    s
                    for s in self._subagents.values()
                    if not s.placed and call.fits(s.type) and call.started <= s.started <= event.occurred_at
                ),
                None,
            )
        if sub is not None and not sub.placed and not self._within(agent, sub):
            self._place(sub, call)
            self._settle(sub)

    def _place(self, sub: _Subagent, call: _Call) -> None:
        sub.parent, sub.placed = call.agent, True
        sub.task = call.task or sub.task
        sub.type = sub.type or call.type

    def _within(self, agent: str, sub: _Subagent) -> bool:
        """Whether ``agent`` is ``sub`` or runs inside it (so ``sub`` cannot have been started by it)."""
        return sub.agent_id in self._ancestry(agent)

    def _ancestry(self, agent: str) -> list[str]:
        """``agent`` and the subagents it runs inside, innermost first (a cycle of bad data ends it)."""
        chain: list[str] = []
        while agent != MAIN and agent not in chain:
            chain.append(agent)
            agent = self._subagents[agent].parent if agent in self._subagents else MAIN
        return chain

    def _write(self, agent: str, lines: list[str]) -> None:
        if agent == MAIN:
            self._out += lines
            return
        sub = self._subagents[agent]
        size = sum(len(line) + 1 for line in lines)
        sub.lines += lines
        sub.size += size
        self._held += size

    def _settle(self, sub: _Subagent) -> None:
        """Write ``sub``'s block into its parent's list once it is placed and stopped (what it does after
        that, if anything, follows as a part of its own)."""
        if sub.placed and sub.stopped is not None and sub.lines:
            self._write(sub.parent, self._block(sub, more=False))
            if sub.parent != MAIN:
                self._settle(self._subagents[sub.parent])

    def _block(self, sub: _Subagent, *, more: bool) -> list[str]:
        """``sub``'s line and its lines held, one level deeper (no longer held)."""
        lines = [self._heading(sub, more=more), *_indented(sub.lines, 1)]
        self._held -= sub.size
        sub.lines, sub.size = [], 0
        sub.parts += 1
        return lines

    def _spill(self) -> None:
        """Past the bound: every held subagent's lines out now, each at its depth, in the order they began."""
        for sub in self._subagents.values():
            if sub.lines:
                self._out += _indented(self._block(sub, more=True), len(self._ancestry(sub.parent)))

    def _finish(self) -> None:
        """Every block still held, into its parent's list: the innermost first, so each holds its own."""
        for sub in list(self._subagents.values()):
            self._flush(sub, [])

    def _flush(self, sub: _Subagent, outer: list[str]) -> None:
        for inner in self._subagents.values():
            if inner.parent == sub.agent_id and inner.lines and inner.agent_id not in outer:
                self._flush(inner, [*outer, sub.agent_id])
        if sub.lines:
            self._write(sub.parent, self._block(sub, more=False))

    def _heading(self, sub: _Subagent, *, more: bool) -> str:
        """The line that names a subagent: its type, id and task, how long it ran, its requests and cost."""
        parts = [f"- `{_clock(sub.started)}` **{sub.type + ' subagent' if sub.type else 'Subagent'}**"]
        parts[0] += f" {_code(sub.agent_id)}"
        if sub.task:
            parts.append(_one_line(_cut(sub.task)))
        if not more:
            if sub.stopped is None:
                parts.append("no stop recorded")
            else:
                parts.append(_duration((sub.stopped - sub.started) / timedelta(milliseconds=1)))
        usage = self._usage.get(sub.agent_id)
        if usage is not None:
            unpriced = f" + {_plural(usage.unpriced, 'request')} of unknown cost" if usage.unpriced else ""
            parts.append(
                f"{_plural(usage.requests, 'request')}, {usage.tokens:,} tokens, ${usage.cost_usd}{unpriced}"
            )
        if sub.parts:
            parts.append("continued")
        if more:
            parts.append("continues below")
        return " — ".join(parts)


@dataclass(frozen=True)
class _Call:
    """An Agent (or Task) call, as far as it tells which subagent it started and what for."""

    tool_use_id: str
    agent: str  # the agent that made it: MAIN or a subagent's id
    started: datetime
    type: str | None  # the subagent type it asked for
    task: str | None  # its description (else its prompt)
    ends: bool  # its end is to come; else its line is written already

    @classmethod
    def of(
        cls, tool_use_id: str, agent: str, started: datetime, body: dict[str, Any], *, ends: bool
    ) -> _Call:
        given = body.get("tool_input")
        given = given if isinstance(given, dict) else {}
        task = _str(given.get("description")) or _str(given.get("prompt"))
        return cls(tool_use_id, agent, started, _str(given.get("subagent_type")), task, ends)

    def fits(self, subagent_type: str | None) -> bool:
        return self.type is None or subagent_type is None or self.type == subagent_type


@dataclass(eq=False)
class _Subagent:
    """A subagent seen in the timeline, and its lines held until its block is written."""

    agent_id: str
    started: datetime  # its SubagentStart, else its first event
    type: str | None
    start_seen: bool = False
    stopped: datetime | None = None  # its (last) SubagentStop
    parent: str = MAIN  # the agent whose list its block goes in (a guess until placed)
    placed: bool = False  # the line of the call that started it is written (or there is none)
    task: str | None = None
    lines: list[str] = field(default_factory=list)
    size: int = 0  # characters of ``lines``
    parts: int = 0  # how many of its blocks were written


def _text(lines: Iterable[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def _indented(lines: list[str], depth: int) -> list[str]:
    pad = "  " * depth
    return [pad + line if line else line for line in lines]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _facts(card: SessionCard) -> list[str]:
    project = card.project and (f"{card.project} ({card.git_branch})" if card.git_branch else card.project)
    facts: list[tuple[str, Any]] = [
        ("Session", _code(card.session_id)),
        ("Project", project),
        ("Directory", _code(card.cwd) if card.cwd else None),
        ("Status", card.status),
        ("Model", card.model),
        ("Agent type", card.agent_type),
        ("Started", card.started_at.isoformat()),
        ("Ended", card.ended_at.isoformat() if card.ended_at else None),
        ("Duration", _duration(card.duration_ms)),
        ("Models", ", ".join(card.models) or None),
        ("Cost", _cost(card)),
        ("Tokens", _tokens(card)),
        ("QA score", card.qa_score),
        ("Events", card.event_count),
        ("Reports", card.report_count),
        ("Subagents", card.subagent_count),
        ("End reason", card.end_reason),
    ]
    return [f"- **{label}:** {value}" for label, value in facts if value is not None]


def _cost(card: SessionCard) -> str | None:
    if card.cost_usd is None:
        return "unknown" if card.cost_source == "unknown" else None
    return f"${card.cost_usd}" + (f" ({card.cost_source})" if card.cost_source else "")


def _tokens(card: SessionCard) -> str | None:
    kinds = (
        ("input", card.input_tokens),
        ("output", card.output_tokens),
        ("cache read", card.cache_read_tokens),
        ("cache write 5m", card.cache_creation_5m_tokens),
        ("cache write 1h", card.cache_creation_1h_tokens),
    )
    if all(n is None for _, n in kinds):
        return None
    return ", ".join(f"{n or 0:,} {kind}" for kind, n in kinds)


def _event_lines(event: TimelineEvent, payload: Any) -> list[str]:
    body = payload if isinstance(payload, dict) else {}
    if event.event_type == cls.TOOL_CALL_START:
        if event.paired_event_id is not None:
            return []  # written with its end
        return [_call_line(event, body, event.occurred_at) + " — no result recorded"]
    if event.event_type in cls.TOOL_CALL_END:
        started = event.occurred_at
        if event.paired_event_id is not None and event.duration_ms is not None:
            started -= timedelta(milliseconds=event.duration_ms)
        line = _call_line(event, body, started)
        if event.duration_ms is not None:
            line += f" — {_duration(event.duration_ms)}"
        if event.event_type == "PostToolUseFailure":
            error = _str(body.get("error"))
            line += " — **failed**" + (f": {_code(_cut(error))}" if error else "")
        return [line]
    at = f"`{_clock(event.occurred_at)}`"
    if event.event_type == "UserPromptSubmit":
        return [f"- {at} **Prompt**", *_quoted(_str(body.get("prompt")) or "")]
    if event.event_type in ("Stop", "SubagentStop"):
        message = _str(body.get("last_assistant_message"))
        who = f" ({body['agent_type']})" if _str(body.get("agent_type")) else ""
        return [f"- {at} **{event.event_type}**{who}", *(_quoted(message) if message else [])]
    detail = next(
        (_str(body.get(key)) for key in ("source", "reason", "message", "agent_type") if _str(body.get(key))),
        None,
    )
    return [f"- {at} **{event.event_type}**" + (f" — {_one_line(_cut(detail))}" if detail else "")]


def _call_line(event: TimelineEvent, body: dict[str, Any], started: datetime) -> str:
    tool = event.tool_name or _str(body.get("tool_name")) or "tool"
    what = _what(tool, body.get("tool_input"))
    return f"- `{_clock(started)}` **{tool}**" + (f" {what}" if what else "")


def _what(tool: str, tool_input: Any) -> str:
    if not isinstance(tool_input, dict):
        return ""
    parts = [_str(tool_input.get(key)) for key in _WHAT.get(tool, ())]
    return " ".join(_code(_cut(part)) for part in parts if part)


def _quoted(text: str) -> list[str]:
    return ["", *(f"  > {line}".rstrip() for line in text.rstrip().splitlines()), ""]


def _decoded(event: TimelineEvent) -> tuple[Any, str | None]:
    """The event's payload as Python values, as far as it can be decoded, and what of it could not be."""
    if not isinstance(event.payload, msgspec.Raw):
        return event.payload, None
    value, problem = payloads.decode(bytes(memoryview(event.payload)), event.event_id)
    if event.payload_unrendered is not UNSET:  # it comes as stored: what was decoded of it is restored here
        value = blobs.restore(value, lambda _digest: None)
    return value, problem


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _cut(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _code(text: str) -> str:
    """``text`` as one inline code span: on one line, fenced by more backticks than it holds in a row."""
    text = _one_line(text)
    fence = "`" * (max((len(run) for run in _TICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}"


def _duration(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s"
