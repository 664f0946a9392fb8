"""A session as a file to keep: ``GET /api/sessions/{id}/export`` as JSON (the detail with every event) or as
a Markdown document a person reads. Pure functions of a :class:`SessionExport`: no I/O.

The Markdown lists the card's facts, the reports' own markdown inline, and the timeline one line per
event, a tool call (PreToolUse and its PostToolUse or PostToolUseFailure) as one line with what it did
(the command, the path, the pattern), how long it took and, for a failure, its error.
"""

from __future__ import annotations

import re
from datetime import datetime
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


def as_json(export: SessionExport) -> bytes:
    return _encode(export)


def as_markdown(export: SessionExport) -> str:
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
    lines += ["## Timeline", ""]
    if not export.events:
        lines.append("No events.")
    lines += _timeline(export.events)
    lines += ["", f"Exported by hookdb at {export.exported_at.isoformat()}.", ""]
    return "\n".join(lines)


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
        ("Cost", None if card.cost_usd is None else f"${card.cost_usd}"),
        ("QA score", card.qa_score),
        ("Events", card.event_count),
        ("Reports", card.report_count),
        ("Subagents", card.subagent_count),
        ("End reason", card.end_reason),
    ]
    return [f"- **{label}:** {value}" for label, value in facts if value is not None]


def _timeline(events: list[TimelineEvent]) -> list[str]:
    by_id = {event.event_id: event for event in events}
    shown_with_start: set[str] = set()  # tool call ends already written on their start's line
    lines: list[str] = []
    for event in events:
        if event.event_id in shown_with_start:
            continue
        payload = _decoded(event.payload)
        end = by_id.get(event.paired_event_id or "") if event.event_type == cls.TOOL_CALL_START else None
        if end is not None:
            shown_with_start.add(end.event_id)
        lines += _event_lines(event, payload, end, _decoded(end.payload) if end else None)
    return lines


def _event_lines(
    event: TimelineEvent, payload: Any, end: TimelineEvent | None, end_payload: Any
) -> list[str]:
    at = f"`{_clock(event.occurred_at)}`"
    body = payload if isinstance(payload, dict) else {}
    if event.event_type == cls.TOOL_CALL_START or event.event_type in cls.TOOL_CALL_END:
        tool = event.tool_name or _str(body.get("tool_name")) or "tool"
        line = f"- {at} **{tool}**"
        what = _what(tool, body.get("tool_input"))
        if what:
            line += " " + what
        failure = end_payload if end is not None else body
        failed = (end or event).event_type == "PostToolUseFailure"
        if event.event_type == cls.TOOL_CALL_START and end is None:
            line += " — no result recorded"
        elif event.duration_ms is not None:
            line += f" — {_duration(event.duration_ms)}"
        if failed:
            error = _str(failure.get("error")) if isinstance(failure, dict) else None
            line += " — **failed**" + (f": {_code(_cut(error))}" if error else "")
        return [line]
    if event.event_type == "UserPromptSubmit":
        prompt = _str(body.get("prompt")) or ""
        return [f"- {at} **Prompt**", *_quoted(prompt)]
    if event.event_type in ("Stop", "SubagentStop"):
        message = _str(body.get("last_assistant_message"))
        who = f" ({body['agent_type']})" if _str(body.get("agent_type")) else ""
        return [f"- {at} **{event.event_type}**{who}", *(_quoted(message) if message else [])]
    detail = next(
        (_str(body.get(key)) for key in ("source", "reason", "message", "agent_type") if _str(body.get(key))),
        None,
    )
    return [f"- {at} **{event.event_type}**" + (f" — {_one_line(_cut(detail))}" if detail else "")]


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
