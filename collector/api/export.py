"""A session as a file to keep: ``GET /api/sessions/{id}/export`` as JSON (the detail with every event) or as
a Markdown document a person reads. Sans-io writers: the app feeds them the session, then the timeline a
page at a time (so a long session never sits in memory whole), and sends what they return.

The Markdown lists the card's facts, the reports' own markdown inline, and the timeline one line per
event, a tool call (PreToolUse and its PostToolUse or PostToolUseFailure) as one line at the call's start
with what it did (the command, the path, the pattern), how long it took and, for a failure, its error.
The line is written when the call's end is read (the end carries the input too, and the error), so no
page needs the next one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from hookdb.collector import classification as cls
from hookdb.collector.api.models import SessionCard, SessionExport, TimelineEvent

_encode = msgspec.json.Encoder(decimal_format="number").encode
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TICKS = re.compile(r"`+")
DETAIL_CHARS = 300  # a tool input or an error shown inline beyond this is cut (the JSON export has it all)

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
    """The Markdown document in pieces, as :class:`JsonWriter`."""

    def __init__(self) -> None:
        self._events = 0

    def head(self, export: SessionExport) -> bytes:
        card = export.session
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
        return _text(line for event in events for line in _event_lines(event, _decoded(event.payload)))

    def end(self) -> bytes:
        return b"" if self._events else _text(["No events."])

    def cut(self) -> bytes:
        return _text(["", f"**The export was cut short after {self._events} events: the database failed.**"])


def _text(lines: Iterable[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


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


def _decoded(payload: Any) -> Any:
    if isinstance(payload, msgspec.Raw):
        try:
            return msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return None
    return payload


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
