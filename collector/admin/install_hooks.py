"""``hookdb install-hooks``: merge hookdb's hooks into Claude Code's ``settings.json``, or take them out.

The decisions, in one place:

* **Which handlers are hookdb's.** A command handler whose command ends with the shell comment
  ``# hookdb install-hooks`` (:data:`MARKER`), or an http handler with the header ``X-Hookdb-Installed-By``.
  The marker, not the path of ``hookdb-emit``, is what install updates and uninstall removes: a moved
  virtual environment, ``--async`` or a switch to ``--http`` replaces hookdb's handler instead of adding a
  second one, and a ``hookdb-emit`` hook the user wrote by hand is never touched (install warns about
  it: that event would be recorded twice). Claude Code runs a command through the shell, so the comment
  costs nothing; an unknown key in the handler object could make Claude Code reject the file.
* **Where.** Each event gets one matcher group of hookdb's own, appended after the user's groups; the
  user's groups and handlers are never modified or reordered. Tool events (:data:`TOOL_EVENTS`) get
  ``"matcher": "*"``, the others none (which matches everything; ``PostToolBatch`` spans several tools).
* **Which events** (the lists and their reasons are in :mod:`hookdb.collector.classification`). All 31
  but two: never ``WorktreeCreate`` (:data:`~hookdb.collector.classification.NEVER_INSTALLED_EVENTS`): a
  WorktreeCreate hook *replaces* Claude Code's own ``git worktree add`` and must print the new worktree's
  path; hookdb-emit prints nothing, so ``claude --worktree`` and worktree-isolated subagents would fail.
  And not ``MessageDisplay`` unless ``--all-events``
  (:data:`~hookdb.collector.classification.OPT_IN_EVENTS`): it fires for every displayed message, a
  process start each, for text the transcript holds anyway. ``PostToolBatch`` (and ``MessageDisplay``
  with ``--all-events``) get background command hooks even without ``--async``
  (:data:`~hookdb.collector.classification.BACKGROUND_EVENTS`): they fire within a turn, and nothing
  needs to wait for them.
* **Timeout** 5 s: hookdb-emit gives up on the collector after 0.5 s and then writes the outbox; the rest
  is headroom for interpreter start-up on a loaded machine. (Claude Code's default is 600 s.)
* **``--async``** sets ``"async": true`` on the command handlers, except for the events that fire as the
  session ends (:data:`SYNC_EVENTS`): Claude Code kills background hooks at teardown, which would lose
  exactly those events, and hookdb-emit is bounded anyway. http handlers have no background mode, so
  ``--async --http`` is refused.
* **``--http``** writes ``Authorization: Bearer $HOOKDB_HOOK_TOKEN`` with ``allowedEnvVars``, so Claude
  Code fills the token in from its environment and the file never holds it. Claude Code runs no http
  hooks for some events (:data:`~hookdb.collector.classification.COMMAND_ONLY_EVENTS`: SessionStart,
  Setup): those get the hookdb-emit command hook instead (``--command`` sets it, e.g. with ``--tenant``
  when the token's tenant is not the one the user's uid writes through the socket).
* **Formatting.** When nothing changes the file is not written (its mtime stays). Otherwise only what
  changes is written anew: every member and item of the JSON that stays keeps its bytes (escapes,
  spacing, one-line arrays, blank lines), and what hookdb adds is written in the file's own style, its
  indentation (or all on one line for a compact file, and on one line inside a container written on
  one line), separators (``":"`` or ``": "``, ``","`` or ``", "``) and line ends; non-ASCII as is; the
  BOM and final newline stay. So a ``--dry-run`` diff shows only hookdb's part. A new file gets 2 spaces.
* **Backup.** Before the file is replaced its previous bytes go to ``settings.json.hookdb-backup``, with the
  file's mode. One exception: when the existing backup already is the file as it was before hookdb
  (``--async`` after an install, say), it is kept, so that uninstall can still give back the original.
* **Uninstall** removes hookdb's handlers and the groups, event lists and ``hooks`` object that are empty
  only because of that. If the result is the backup's content (empty hook containers aside), the
  backup's bytes are written back, so install + uninstall restores the file byte for byte, and the
  backup, no longer needed, is deleted. If nothing but hookdb's hooks was in the file (hookdb created
  it), the file is deleted; the ``.claude`` directory is left alone. Otherwise the result is written as
  above, with a backup.
* **Refusals** (exit 1, file untouched, no backup): not UTF-8, not JSON (``path:line:column: message``),
  not a JSON object, a ``hooks`` that is not an object or an event that is not a list. An empty or blank
  file counts as ``{}``. The write is atomic (temporary file in the same directory, fsync, ``os.replace``,
  fsync of the directory) and is abandoned if the file changed while it was being edited. A symlinked
  settings file (dotfiles) is edited where it points, so the link stays.

* **``--otel``** also turns on Claude Code's own OpenTelemetry export to hookdb's OTLP receiver
  (``otlp.enabled``): the ``env`` members of :meth:`Telemetry.env` (logs and metrics over
  ``http/protobuf`` to ``--otel-endpoint``, default :data:`DEFAULT_OTLP_ENDPOINT`, with
  ``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer <token>``). The token is ``$HOOKDB_HOOK_TOKEN``'s
  value written into the file (an OTEL header takes no variables; refused when unset). Claude Code
  ignores telemetry variables in a project's settings and honours them in the user's, so this part always
  goes to the user settings file (``~/.claude/settings.json``), wherever the hooks go (``--project``, the
  default, or ``--user``: then one file), and the command says where it wrote each part. What is hookdb's
  is named by the ``env`` member :data:`OTEL_MARKER` (the keys hookdb added, space-separated): re-running
  updates those keys; uninstall removes them and the marker, and the ``env`` object if that empties it. A
  key that the user already had with the same value is theirs, not listed, kept; with another value it is
  left as it is and install warns (that setting may keep telemetry from reaching hookdb).

The pure part is :func:`plan_install`, :func:`plan_otel` and :func:`plan_uninstall` (old text → new text);
:func:`run` does the I/O.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookdb.collector import classification as cls
from hookdb.collector.admin.usage import command
from hookdb.collector.ops.files import fsync_dir

EVENTS: tuple[str, ...] = (
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "UserPromptSubmit",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "Notification",
    "PermissionRequest",
    "SessionStart",
    "SessionEnd",
    "Setup",
    "UserPromptExpansion",
    "MessageDisplay",
    "PostToolBatch",
    "PermissionDenied",
    "StopFailure",
    "TaskCreated",
    "TaskCompleted",
    "TeammateIdle",
    "InstructionsLoaded",
    "ConfigChange",
    "CwdChanged",
    "DirectoryAdded",
    "FileChanged",
    "WorktreeCreate",
    "WorktreeRemove",
    "PostCompact",
    "Elicitation",
    "ElicitationResult",
)
"""Claude Code's hook events, in the order of its hooks reference."""

SKIPPED_EVENTS = cls.NEVER_INSTALLED_EVENTS
"""Events whose hooks change what Claude Code does even when they print nothing: never installed."""

ALL_EVENTS: tuple[str, ...] = tuple(e for e in EVENTS if e not in SKIPPED_EVENTS)
"""What ``--all-events`` installs."""
INSTALLED_EVENTS: tuple[str, ...] = tuple(e for e in ALL_EVENTS if e not in cls.OPT_IN_EVENTS)
"""What install-hooks installs by default."""
TOOL_EVENTS = frozenset(
    {"PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest", "PermissionDenied"}
)
"""Events about one tool call; their matcher is the tool name, so hookdb matches ``*``."""

SYNC_EVENTS = cls.SYNC_EVENTS
"""Events that fire as the session ends; ``--async`` leaves them synchronous so teardown cannot kill them."""

MARKER = "# hookdb install-hooks"
MARKER_HEADER = "X-Hookdb-Installed-By"
TOKEN_ENV = "HOOKDB_HOOK_TOKEN"
DEFAULT_URL = "http://127.0.0.1:9465/v1/hooks/claude-code"
TIMEOUT_SECONDS = 5
BACKUP_SUFFIX = ".hookdb-backup"
CONFIG_DIR_ENV = "CLAUDE_CONFIG_DIR"
BOM = "\ufeff"
DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4318"
"""The OTLP/HTTP receiver's default address (``otlp.listen``), the OTLP/HTTP convention."""
OTEL_MARKER = "HOOKDB_OTEL_KEYS"
"""The ``env`` member naming the telemetry keys install-hooks added (what ``--uninstall`` removes)."""
OTEL_KEYS = (
    "CLAUDE_CODE_ENABLE_TELEMETRY",
    "OTEL_LOGS_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
)


class SettingsError(Exception):
    """The settings file cannot be edited safely; the message starts with the place (``path:line:col:``)."""


class UsageError(Exception):
    """The options contradict each other."""


@dataclass(frozen=True, slots=True)
class HookForm:
    """What hookdb installs for each event: ``command`` (a shell command running hookdb-emit), or ``url``
    with ``command`` for the events Claude Code runs no http hooks for."""

    command: str | None = None
    url: str | None = None
    background: bool = False
    timeout: int = TIMEOUT_SECONDS
    all_events: bool = False
    """Install the events of ``OPT_IN_EVENTS`` too."""

    @property
    def events(self) -> tuple[str, ...]:
        return ALL_EVENTS if self.all_events else INSTALLED_EVENTS

    def handler(self, event: str) -> dict[str, Any]:
        if self.url is not None and (self.command is None or event not in cls.COMMAND_ONLY_EVENTS):
            return {
                "type": "http",
                "url": self.url,
                "headers": {"Authorization": f"Bearer ${TOKEN_ENV}", MARKER_HEADER: "hookdb install-hooks"},
                "allowedEnvVars": [TOKEN_ENV],
                "timeout": self.timeout,
            }
        handler: dict[str, Any] = {
            "type": "command",
            "command": f"{self.command} {MARKER}",
            "timeout": self.timeout,
        }
        if (self.background or event in cls.BACKGROUND_EVENTS) and event not in SYNC_EVENTS:
            handler["async"] = True
        return handler

    def group(self, event: str) -> dict[str, Any]:
        """hookdb's matcher group for ``event``."""
        group: dict[str, Any] = {"matcher": "*"} if event in TOOL_EVENTS else {}
        group["hooks"] = [self.handler(event)]
        return group


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What ``--otel`` adds to ``env``: Claude Code's OTLP export of logs and metrics to hookdb."""

    endpoint: str = DEFAULT_OTLP_ENDPOINT
    token: str = ""

    def env(self) -> dict[str, str]:
        values = ("1", "otlp", "otlp", "http/protobuf", self.endpoint, f"Authorization=Bearer {self.token}")
        return dict(zip(OTEL_KEYS, values, strict=True))


def is_hookdb_handler(handler: object) -> bool:
    """Whether ``handler`` was written by install-hooks (it carries the marker)."""
    if not isinstance(handler, dict):
        return False
    if handler.get("type") == "command":
        command = handler.get("command")
        return isinstance(command, str) and command.rstrip().endswith(MARKER)
    if handler.get("type") == "http":
        headers = handler.get("headers")
        return isinstance(headers, dict) and any(
            isinstance(k, str) and k.lower() == MARKER_HEADER.lower() for k in headers
        )
    return False


def _runs_hookdb_emit(handler: object) -> bool:
    """Whether a handler without the marker sends events to hookdb anyway (written by hand)."""
    if not isinstance(handler, dict) or is_hookdb_handler(handler):
        return False
    if handler.get("type") == "command" and isinstance(handler.get("command"), str):
        try:
            words = shlex.split(handler["command"], comments=True)
        except ValueError:
            return False
        return any(os.path.basename(word) == "hookdb-emit" for word in words)
    url = handler.get("url")
    return handler.get("type") == "http" and isinstance(url, str) and "/v1/hooks/claude-code" in url


# --- parsing and rendering --------------------------------------------------------------------------


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _NotJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(name)


_CONSTANT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?Infinity|NaN)')


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def parse(text: str, name: str) -> dict[str, Any]:
    """The settings in ``text`` (blank: ``{}``); else :class:`SettingsError` naming line and column."""
    body = text.removeprefix(BOM)
    if not body.strip(" \t\r\n"):
        return {}
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except _NotJson as exc:  # Python's json takes NaN and Infinity; Claude Code's JSON.parse does not
        match = next((m for m in _CONSTANT.finditer(body) if m.group(1)), None)
        line, col = _position(body, match.start(1)) if match else (1, 1)
        raise SettingsError(f"{name}:{line}:{col}: not valid JSON: {exc} is not a JSON value") from None
    if not isinstance(value, dict):
        line, col = _position(body, len(body) - len(body.lstrip(" \t\r\n")))
        raise SettingsError(f"{name}:{line}:{col}: settings must be a JSON object, not {_json_type(value)}")
    return value


@dataclass(frozen=True, slots=True)
class _Style:
    """How a file writes JSON: indent (None: all on one line), separators and line end."""

    indent: str | None = "  "
    item_sep: str = ","
    key_sep: str = ": "
    newline: str = "\n"


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[,:]')


def _style_of(body: str) -> _Style:
    """The style of the JSON text ``body``: its first indented line, its first ``,`` and ``:``."""
    newline = "\r\n" if "\r\n" in body else "\n"
    if ":" not in body:
        return _Style(newline=newline)  # ``{}``: no member to learn from
    if "\n" not in body.strip(" \t\r\n"):
        indent = None
    else:
        indent_match = re.search(r"^([ \t]*)\S", body.lstrip(" \t\r\n").split("\n", 1)[1], re.MULTILINE)
        indent = indent_match.group(1) if indent_match else ""
    found = {",": ", " if indent is None else ",", ":": ": "}
    seen: set[str] = set()
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token in found and token not in seen:
            seen.add(token)
            following = body[match.end() : match.end() + 1]
            if token == ":" or indent is None:
                found[token] = token + " " if following in (" ", "\t") else token
        if len(seen) == 2:
            break
    return _Style(indent, found[","], found[":"], newline)


def _dumps(value: object, style: _Style, line_indent: str) -> str:
    """``value`` as JSON in ``style``, its lines continued at ``line_indent``."""
    separators = (style.item_sep, style.key_sep)
    try:
        text = json.dumps(value, indent=style.indent, separators=separators, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, legal as a JSON escape only: keep it escaped
        text = json.dumps(value, indent=style.indent, separators=separators)
    return text.replace("\n", style.newline + line_indent)


@dataclass(slots=True)
class _Node:
    """Where a JSON value sits in the text: its span, and its members (object) or items (array)."""

    start: int
    end: int
    keys: list[tuple[str, int]] | None = None
    """An object's keys and where each member starts."""
    children: list[_Node] | None = None


_WHITESPACE = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    return match.end() if match else at


def _scan(text: str, at: int) -> _Node:
    """The node of the (valid) JSON value at ``at``."""
    opening = text[at]
    if opening not in "{[":
        return _Node(at, _DECODER.raw_decode(text, at)[1])
    closing = "}" if opening == "{" else "]"
    node = _Node(at, at, [] if opening == "{" else None, [])
    assert node.children is not None
    index = _skip(text, at + 1)
    while text[index] != closing:
        if node.keys is not None:
            key, after = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
            node.keys.append((key, index))
            index = _skip(text, _skip(text, after) + 1)  # past the colon
        child = _scan(text, index)
        node.children.append(child)
        index = _skip(text, child.end)
        if text[index] == ",":
            index = _skip(text, index + 1)
    node.end = index + 1
    return node


def _line_indent(text: str, at: int) -> str:
    start = text.rfind("\n", 0, at) + 1
    return _WHITESPACE.match(text, start).group().lstrip("\r\n")  # type: ignore[union-attr]


def _rewrite(text: str, node: _Node, old: object, new: object, style: _Style) -> str:
    """The text of ``new`` in place of ``old`` (at ``node``), keeping every part of ``old`` it still holds
    as written: the unchanged members and items keep their bytes, the changed ones are rewritten the same
    way, the new ones are written in ``style``."""
    if _dump(old) == _dump(new):
        return text[node.start : node.end]
    if style.indent is not None and node.children and "\n" not in text[node.start : node.end]:
        # A container written on one line in an indented file stays on one line.
        style = _Style(None, ", ", style.key_sep, style.newline)
    if node.children is None:
        return _dumps(new, style, _line_indent(text, node.start))
    pieces: list[tuple[int, str]] = []  # (index of the old member or item, its text)
    if isinstance(old, dict) and isinstance(new, dict) and node.keys is not None:
        keys = [key for key, _ in node.keys]
        kept = [key for key in keys if key in new]
        if len(set(keys)) != len(keys) or list(new)[: len(kept)] != kept:
            return _dumps(new, style, _line_indent(text, node.start))
        for key in kept:
            index = keys.index(key)
            child = node.children[index]
            head = text[node.keys[index][1] : child.start]
            pieces.append((index, head + _rewrite(text, child, old[key], new[key], style)))
        added = [(key, new[key]) for key in list(new)[len(kept) :]]
    elif isinstance(old, list) and isinstance(new, list) and node.keys is None:
        if len(old) == len(new):
            for index, (child, was, now) in enumerate(zip(node.children, old, new, strict=True)):
                pieces.append((index, _rewrite(text, child, was, now, style)))
            added = []
        else:
            # Items kept in order (hookdb's own group is taken out or put last); the rest are new.
            position = 0
            added: list[_Added] = []
            for item in new:
                match = next((i for i in range(position, len(old)) if _dump(old[i]) == _dump(item)), None)
                if match is None or added:
                    added.append((None, item))
                    continue
                pieces.append((match, text[node.children[match].start : node.children[match].end]))
                position = match + 1
    else:
        return _dumps(new, style, _line_indent(text, node.start))
    return _join(text, node, pieces, added, style)


_Added = tuple[str | None, Any]
"""A new member (key, value) of an object, or a new item (None, value) of an array."""


def _join(text: str, node: _Node, pieces: list[tuple[int, str]], added: list[_Added], style: _Style) -> str:
    """A container from its kept pieces (old index, text) and its new members, with the whitespace the
    original had between them."""
    assert node.children is not None
    starts = [start for _, start in node.keys] if node.keys is not None else [c.start for c in node.children]
    opening, closing = text[node.start], text[node.end - 1]
    if not starts:  # an empty container: lay the new members out as the style says
        outer = _line_indent(text, node.start)
        inner = outer + style.indent if style.indent is not None else ""
        first = style.newline + inner if style.indent is not None else ""
        tail = style.newline + outer if style.indent is not None else ""
    else:
        first = text[node.start + 1 : starts[0]]
        tail = text[node.children[-1].end : node.end - 1]
        inner = _line_indent(text, starts[0])
    gaps = [text[node.children[i - 1].end : starts[i]] for i in range(1, len(starts))]
    usual = gaps[0] if gaps else ("," + first if "\n" in first else style.item_sep)
    out = [opening]
    previous: int | None = None
    for count, (index, piece) in enumerate(pieces):
        if count:
            out.append(gaps[index - 1] if previous is not None and index == previous + 1 else usual)
        out += [first] if not count else []
        out.append(piece)
        previous = index
    for count, (key, value) in enumerate(added):
        out.append(usual if pieces or count else first)
        out.append(f"{_dumps(key, style, inner)}{style.key_sep}" if key is not None else "")
        out.append(_dumps(value, style, inner))
    if not (pieces or added):
        return opening + closing
    return "".join(out) + tail + closing


def render(settings: dict[str, Any], like: str | None) -> str:
    """``settings`` as JSON, written over ``like`` (the file's current text): every part of it that is
    unchanged keeps its bytes, the rest is written in the file's own style (indent or one line,
    separators, line end), its BOM and final newline kept. A new file gets a 2-space indent."""
    bom = BOM if (like or "").startswith(BOM) else ""
    body = (like or "").removeprefix(BOM)
    if not body.strip(" \t\r\n"):
        return bom + _dumps(settings, _Style(), "") + "\n"
    start = _skip(body, 0)
    root = _scan(body, start)
    text = _rewrite(body, root, parse(body, "settings"), settings, _style_of(body))
    return bom + body[:start] + text + body[root.end :]


def _dump(value: object) -> str:
    """A type-strict, order-strict comparison key (``True == 1`` in Python, not in Claude Code)."""
    return json.dumps(value, ensure_ascii=False)


def _canonical(settings: dict[str, Any]) -> str:
    """``settings`` without empty event lists, an empty ``hooks`` or ``env``: they mean nothing to Claude
    Code."""
    result = dict(settings)
    hooks = result.get("hooks")
    if isinstance(hooks, dict):
        hooks = {event: groups for event, groups in hooks.items() if groups != []}
        if hooks:
            result["hooks"] = hooks
        else:
            del result["hooks"]
    if result.get("env") == {}:
        del result["env"]
    return _dump(result)


# --- the edits (pure) -------------------------------------------------------------------------------


def _strip(groups: list[Any]) -> bool:
    """Remove hookdb's handlers from ``groups`` and the groups left empty by it; return whether any went."""
    removed = False
    kept = []
    for group in groups:
        handlers = group.get("hooks") if isinstance(group, dict) else None
        if isinstance(handlers, list) and any(is_hookdb_handler(h) for h in handlers):
            removed = True
            rest = [h for h in handlers if not is_hookdb_handler(h)]
            if not rest:
                continue
            group["hooks"] = rest
        kept.append(group)
    groups[:] = kept
    return removed


def _place(groups: list[Any], desired: dict[str, Any]) -> None:
    """Leave exactly one hookdb group in ``groups``, equal to ``desired``: updated in place when it is
    already there on its own, else appended after the user's groups."""
    ours = [
        index
        for index, group in enumerate(groups)
        if isinstance(group, dict)
        and isinstance(group.get("hooks"), list)
        and any(is_hookdb_handler(h) for h in group["hooks"])
    ]
    if len(ours) == 1:
        group = groups[ours[0]]
        if len(group["hooks"]) == 1 and set(group) <= {"matcher", "hooks"}:
            groups[ours[0]] = desired
            return
    _strip(groups)
    groups.append(desired)


def _hooks_of(settings: dict[str, Any], name: str) -> dict[str, Any]:
    hooks = settings.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise SettingsError(f'{name}: "hooks" is {_json_type(hooks)}, not an object; fix it first')
    return hooks


def install(settings: dict[str, Any], form: HookForm, name: str = "settings.json") -> dict[str, Any]:
    """A copy of ``settings`` with hookdb's group for every installed event, the user's untouched."""
    result = copy.deepcopy(settings)
    hooks = _hooks_of(result, name)
    for event, groups in list(hooks.items()):  # events hookdb does not (or no longer) install
        if event not in form.events and isinstance(groups, list) and _strip(groups) and not groups:
            del hooks[event]
    for event in form.events:
        groups = hooks.setdefault(event, [])
        if not isinstance(groups, list):
            raise SettingsError(
                f'{name}: "hooks.{event}" is {_json_type(groups)}, not an array; fix it first'
            )
        _place(groups, form.group(event))
    return result


def uninstall(settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` without hookdb's handlers and telemetry keys, and the containers emptied by
    their removal."""
    result = copy.deepcopy(settings)
    env = result.get("env")
    if isinstance(env, dict) and OTEL_MARKER in env:
        for key in _otel_owned(env):
            env.pop(key, None)
        del env[OTEL_MARKER]
        if not env:
            del result["env"]
    hooks = result.get("hooks")
    if not isinstance(hooks, dict):
        return result
    emptied = False
    for event, groups in list(hooks.items()):
        if isinstance(groups, list) and _strip(groups) and not groups:
            del hooks[event]
            emptied = True
    if emptied and not hooks:
        del result["hooks"]
    return result


def _otel_owned(env: dict[str, Any]) -> list[str]:
    """The telemetry keys the marker says install-hooks added (only those it can have added)."""
    listed = env.get(OTEL_MARKER)
    return [k for k in listed.split() if k in OTEL_KEYS] if isinstance(listed, str) else []


def install_otel(
    settings: dict[str, Any], telemetry: Telemetry, name: str = "settings.json"
) -> dict[str, Any]:
    """A copy of ``settings`` with the telemetry keys in ``env``: hookdb's set (or updated), the user's own
    left as they are."""
    result = copy.deepcopy(settings)
    env = result.get("env", {})
    if not isinstance(env, dict):
        raise SettingsError(f'{name}: "env" is {_json_type(env)}, not an object; fix it first')
    owned = _otel_owned(env)
    mine = []
    for key, value in telemetry.env().items():
        if key in owned or key not in env:
            env[key] = value
            mine.append(key)
    if mine:
        env[OTEL_MARKER] = " ".join(mine)
    elif OTEL_MARKER in env:
        del env[OTEL_MARKER]
    if env or "env" in result:
        result["env"] = env
    return result


def otel_warnings(settings: dict[str, Any], telemetry: Telemetry) -> list[str]:
    """The user's own telemetry settings that differ from hookdb's (install leaves them as they are)."""
    env = settings.get("env")
    found = []
    for key, value in telemetry.env().items() if isinstance(env, dict) else ():
        if key in env and env[key] != value:
            # Headers hold a token: say that they differ, not what they are.
            if key == "OTEL_EXPORTER_OTLP_HEADERS":
                shown = "differs from hookdb's"
            else:
                shown = f"is {json.dumps(env[key])}, not {json.dumps(value)}"
            found.append(f'"env.{key}" {shown}: yours, left as it is (telemetry may not reach hookdb)')
    return found


def plan_install(old: str | None, form: HookForm, name: str = "settings.json") -> str:
    """The file's text after install (``old``: its text, ``None`` when it does not exist); ``old`` itself
    when hookdb's hooks are already there as ``form`` says."""
    settings = parse(old or "", name)
    new = install(settings, form, name)
    if old is not None and _dump(new) == _dump(settings):
        return old
    return render(new, old)


def warnings(settings: dict[str, Any]) -> list[str]:
    """What keeps the installed hooks from recording each event exactly once."""
    found = []
    if settings.get("disableAllHooks") is True:
        found.append('"disableAllHooks" is true: Claude Code runs no hooks from this file')
    hooks = settings.get("hooks")
    twice = [
        event
        for event, groups in (hooks.items() if isinstance(hooks, dict) else ())
        if isinstance(groups, list)
        and any(
            _runs_hookdb_emit(h)
            for g in groups
            if isinstance(g, dict) and isinstance(g.get("hooks"), list)
            for h in g["hooks"]
        )
    ]
    if twice:
        found.append(
            f"a hook written by hand already sends {', '.join(twice)} to hookdb; those events will be "
            "recorded twice (install-hooks leaves that hook alone; remove it yourself)"
        )
    return found


def _holds_before_hookdb(backup: str, settings: dict[str, Any]) -> bool:
    """Whether ``backup`` is ``settings`` as they were before hookdb: none of its handlers, same content."""
    try:
        original = parse(backup, BACKUP_SUFFIX)
    except SettingsError:
        return False
    return _dump(uninstall(original)) == _dump(original) and _canonical(original) == _canonical(settings)


def plan_otel(old: str | None, telemetry: Telemetry, name: str = "settings.json") -> str:
    """The file's text after installing the telemetry keys; ``old`` itself when they are there already."""
    settings = parse(old or "", name)
    new = install_otel(settings, telemetry, name)
    if old is not None and _dump(new) == _dump(settings):
        return old
    return render(new, old)


def installed_parts(settings: dict[str, Any]) -> list[str]:
    """What of hookdb's ``settings`` hold, in words."""
    parts = []
    hooks = settings.get("hooks")
    if isinstance(hooks, dict) and any(
        isinstance(g, dict) and isinstance(g.get("hooks"), list) and any(map(is_hookdb_handler, g["hooks"]))
        for groups in hooks.values()
        if isinstance(groups, list)
        for g in groups
    ):
        parts.append("hookdb's hooks")
    env = settings.get("env")
    if isinstance(env, dict) and OTEL_MARKER in env:
        parts.append("hookdb's telemetry environment")
    return parts


def plan_uninstall(old: str | None, backup: str | None, name: str = "settings.json") -> str | None:
    """The file's text after uninstall, ``None`` for no file: ``old`` itself when it holds nothing of
    hookdb's; ``backup`` when that is the file as it was before hookdb; ``None`` when nothing else is left."""
    if old is None:
        return None
    settings = parse(old, name)
    new = uninstall(settings)
    if _dump(new) == _dump(settings):
        return old
    if backup is not None and _holds_before_hookdb(backup, new):
        return backup
    if _canonical(new) == "{}":
        return None
    return render(new, old)


def diff(old: str | None, new: str | None, path: str) -> str:
    """A unified diff from ``old`` to ``new`` (``None``: no file), as ``diff -u`` prints it."""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        (new or "").splitlines(keepends=True),
        fromfile=path if old is not None else "/dev/null",
        tofile=path if new is not None else "/dev/null",
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


# --- files ------------------------------------------------------------------------------------------


def user_settings_path() -> Path:
    """``$CLAUDE_CONFIG_DIR/settings.json``, else ``~/.claude/settings.json`` (as Claude Code looks)."""
    config_dir = os.environ.get(CONFIG_DIR_ENV)
    return (Path(config_dir) if config_dir else Path.home() / ".claude") / "settings.json"


def settings_path(args: argparse.Namespace) -> Path:
    if args.settings:
        return Path(args.settings).absolute()
    if args.user:
        return user_settings_path().absolute()
    project = Path(args.project or ".")
    if not project.is_dir():  # a typo must not create a stray directory tree
        raise UsageError(f"--project {args.project}: no such directory")
    return (project / ".claude" / "settings.json").absolute()


def default_emit_command() -> str:
    """The ``hookdb-emit`` of this installation (beside the interpreter), else the one on ``PATH``."""
    beside = Path(sys.executable).parent / "hookdb-emit"
    found = str(beside.absolute()) if os.access(beside, os.X_OK) else shutil.which("hookdb-emit")
    if not found:
        raise UsageError("hookdb-emit is neither beside this Python nor on PATH; pass --command")
    return shlex.quote(os.path.abspath(found))


@dataclass(slots=True)
class _Current:
    """A file as read: its bytes (to detect a concurrent change), text and status (``None``: no file)."""

    data: bytes | None
    text: str | None
    status: os.stat_result | None


def _read(path: Path) -> _Current:
    try:
        data = path.read_bytes()
        status = path.stat()
    except FileNotFoundError:
        return _Current(None, None, None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SettingsError(f"{path}:{line}:{col}: not UTF-8 text: {exc.reason}") from None
    return _Current(data, text, status)


def _read_backup(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _check_unchanged(path: Path, current: _Current) -> None:
    try:
        data: bytes | None = path.read_bytes()
    except FileNotFoundError:
        data = None
    if data != current.data:
        raise SettingsError(
            f"{path}: changed while install-hooks was editing it; nothing written, run it again"
        )


def _write_atomic(
    path: Path, text: str, mode_of: os.stat_result | None, before: _Current | None, *, private: bool = False
) -> None:
    """Replace ``path`` with ``text`` all at once, with the mode and owner of ``mode_of``; ``before``: abandon
    the write if the file no longer is what was read; ``private``: a new file is the owner's only (0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            if mode_of is None:
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(f.fileno(), (0o600 if private else 0o666) & ~umask)  # what open() would create
            else:
                os.fchmod(f.fileno(), stat.S_IMODE(mode_of.st_mode))
                with contextlib.suppress(PermissionError):  # only root may give a file to someone else
                    os.fchown(f.fileno(), mode_of.st_uid, mode_of.st_gid)
            f.flush()
            os.fsync(f.fileno())
        if before is not None:
            _check_unchanged(path, before)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _target(path: Path) -> Path:
    """Where to write: through a symlink (a dotfiles checkout), so the link survives ``os.replace``."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _preview(old: str | None, new: str | None, path: Path) -> None:
    """What ``--dry-run`` prints: the diff, then a line saying that nothing was written."""
    change = diff(old, new, str(path))
    sys.stdout.write(change)
    lines = change.splitlines()[2:]
    added = sum(line.startswith("+") for line in lines)
    removed = sum(line.startswith("-") for line in lines)
    what = "created" if old is None else "deleted" if new is None else "changed"
    print(f"{path}: dry run, nothing written (the file would be {what}: +{added} -{removed} lines)")


@dataclass(frozen=True, slots=True)
class _Part:
    """One thing install writes into a file: its edit (old text, file name → new text), its warnings,
    and what to say once it is written."""

    plan: Callable[[str | None, str], str]
    check: Callable[[dict[str, Any]], list[str]]
    done: str
    already: str
    secret: bool = False
    """It writes a token: a file it creates is readable by its owner only."""


def _hooks_part(form: HookForm) -> _Part:
    return _Part(
        lambda old, name: plan_install(old, form, name),
        warnings,
        f"hookdb's hooks installed for {len(form.events)} events",
        "hookdb's hooks are already installed",
    )


def _otel_part(telemetry: Telemetry) -> _Part:
    return _Part(
        lambda old, name: plan_otel(old, telemetry, name),
        lambda settings: otel_warnings(settings, telemetry),
        f"Claude Code's telemetry set to go to {telemetry.endpoint} (OTLP logs and metrics)",
        "Claude Code's telemetry already goes to hookdb",
        secret=True,
    )


def _install(path: Path, parts: list[_Part], dry_run: bool) -> int:
    target = _target(path)
    current = _read(target)
    new = current.text
    for part in parts:
        new = part.plan(new, str(path))
    assert new is not None
    settings = parse(new, str(path))
    for part in parts:
        for warning in part.check(settings):
            print(f"hookdb install-hooks: warning: {path}: {warning}", file=sys.stderr)
    if new == current.text:
        print(f"{path}: {' and '.join(p.already for p in parts)}; no change, nothing written")
        return 0
    if dry_run:
        _preview(current.text, new, path)
        return 0
    backup = target.with_name(target.name + BACKUP_SUFFIX)
    saved = ""
    if current.text is not None and plan_uninstall(current.text, None) is not None:
        existing = _read_backup(backup)
        if existing is None or plan_uninstall(current.text, existing) != existing:
            _write_atomic(backup, current.text, current.status, None)
        saved = f" (backup: {backup})"
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, new, current.status, current, private=any(p.secret for p in parts))
    print(f"{path}: {'; '.join(p.done for p in parts)}{saved}")
    return 0


def _uninstall(path: Path, dry_run: bool) -> int:
    target = _target(path)
    current = _read(target)
    backup = target.with_name(target.name + BACKUP_SUFFIX)
    backup_text = _read_backup(backup)
    new = plan_uninstall(current.text, backup_text, str(path))
    if new == current.text:
        what = "no hookdb hooks in it" if new is not None else "no such file"
        print(f"{path}: {what}; no change, nothing written")
        return 0
    removed = " and ".join(installed_parts(parse(current.text or "", str(path))))
    if dry_run:
        _preview(current.text, new, path)
        return 0
    if new is None:
        _check_unchanged(target, current)
        target.unlink()
        fsync_dir(target.parent)
        backup.unlink(missing_ok=True)
        print(f"{path}: {removed} removed; nothing else was in it, so the file was deleted")
    elif new == backup_text:
        _write_atomic(target, new, current.status, current)
        backup.unlink()
        print(f"{path}: {removed} removed; the file is back as it was, byte for byte")
    else:
        _write_atomic(backup, current.text or "", current.status, None)
        _write_atomic(target, new, current.status, current)
        print(f"{path}: {removed} removed (backup: {backup})")
    return 0


# --- command line -----------------------------------------------------------------------------------


def _form(args: argparse.Namespace) -> HookForm:
    if args.otel_endpoint is not None and not args.otel:
        raise UsageError("--otel-endpoint goes with --otel")
    if args.uninstall:
        if args.background or args.http or args.url or args.emit_command or args.all_events:
            raise UsageError(
                "--uninstall removes hookdb's hooks whatever their form; "
                "drop --async/--http/--url/--command/--all-events"
            )
        if args.otel_endpoint is not None:
            raise UsageError("--uninstall --otel removes hookdb's telemetry whatever its endpoint")
        return HookForm()
    if args.url and not args.http:
        raise UsageError("--url goes with --http")
    if args.http:
        if args.background:
            raise UsageError(
                "--async applies to command hooks only; Claude Code has no background http hooks"
            )
        url = args.url or DEFAULT_URL
        if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
            raise UsageError(f"--url must be an http:// or https:// URL, not {url!r}")
        # the command for COMMAND_ONLY_EVENTS
        return HookForm(command=_emit_command(args), url=url, all_events=args.all_events)
    return HookForm(command=_emit_command(args), background=args.background, all_events=args.all_events)


def _telemetry(args: argparse.Namespace) -> Telemetry:
    endpoint = args.otel_endpoint or DEFAULT_OTLP_ENDPOINT
    if not endpoint.startswith(("http://", "https://")) or any(c.isspace() or c == "," for c in endpoint):
        raise UsageError(f"--otel-endpoint must be an http:// or https:// URL, not {endpoint!r}")
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise UsageError(
            f"--otel needs ${TOKEN_ENV}: the bearer token of the collector's tenant ([http_hooks.tokens]), "
            "which Claude Code sends with its telemetry; set it and run again"
        )
    if any(c.isspace() or c in ",=" for c in token):
        raise UsageError(f"${TOKEN_ENV} cannot go in an OTEL header: it holds a space, ',' or '='")
    return Telemetry(endpoint, token)


def _emit_command(args: argparse.Namespace) -> str:
    command = args.emit_command if args.emit_command is not None else default_emit_command()
    if not command.strip() or "\n" in command or "\r" in command:
        raise UsageError("--command must be one non-empty line")
    return command.strip()


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``install-hooks`` on a ``hookdb`` sub-command parser."""
    parser = command(
        commands,
        "install-hooks",
        "add hookdb's hooks to Claude Code's settings.json (or remove them)",
        "hookdb install-hooks --project /path/to/repo",
        "hookdb install-hooks --user --dry-run",
        "hookdb install-hooks --project . --uninstall",
        "hookdb install-hooks --user --all-events",
        "HOOKDB_HOOK_TOKEN=... hookdb install-hooks --project . --otel",
        description="Merge hookdb's hooks into Claude Code's settings.json, keeping everything else as "
        "written; running it again changes nothing, --uninstall removes exactly what it added. Every event "
        "gets a synchronous hook (recorded before Claude Code goes on) but: WorktreeCreate never (its hook "
        "would replace git worktree creation); MessageDisplay only with --all-events (it fires for every "
        "displayed message, a process start each, for text the transcript has); PostToolBatch and "
        "MessageDisplay as background command hooks (they fire within a turn, nothing waits for them); "
        f"{', '.join(sorted(SYNC_EVENTS))} "
        "always synchronous, even with --async (Claude Code kills background hooks as the session ends).",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--project", metavar="DIR", help="edit DIR/.claude/settings.json (default: DIR is .)")
    where.add_argument(
        "--user", action="store_true", help=f"edit ~/.claude/settings.json (${CONFIG_DIR_ENV}/ when set)"
    )
    where.add_argument("--settings", metavar="FILE", help="edit this file, e.g. .claude/settings.local.json")
    parser.add_argument(
        "--async",
        dest="background",
        action="store_true",
        help=f"run the command hooks in the background, except {', '.join(sorted(SYNC_EVENTS))}",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help=f"http hooks with the token from ${TOKEN_ENV} (command hooks for "
        f"{', '.join(sorted(cls.COMMAND_ONLY_EVENTS))}, which Claude Code runs no http hooks for)",
    )
    parser.add_argument("--url", help=f"the collector's hook endpoint for --http (default {DEFAULT_URL})")
    parser.add_argument(
        "--command",
        dest="emit_command",
        metavar="COMMAND",
        help="the shell command to run (default: the absolute path of this installation's hookdb-emit)",
    )
    parser.add_argument(
        "--all-events",
        action="store_true",
        help=f"also install {', '.join(sorted(cls.OPT_IN_EVENTS))} (left out by default: a process start "
        "for every displayed message)",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="also turn on Claude Code's OpenTelemetry export to hookdb (env in ~/.claude/settings.json, "
        f"where Claude Code reads it, wherever the hooks go; token from ${TOKEN_ENV}); with --uninstall, "
        "take it out again",
    )
    parser.add_argument(
        "--otel-endpoint",
        metavar="URL",
        help=f"the collector's OTLP/HTTP receiver for --otel (default {DEFAULT_OTLP_ENDPOINT})",
    )
    parser.add_argument("--uninstall", action="store_true", help="remove what install-hooks added")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the change as a diff and say so; write nothing"
    )
    parser.set_defaults(overrides=[])  # hookdb's main() reads --set overrides before dispatching


def run(args: argparse.Namespace) -> int:
    """Carry out ``install-hooks``: 0 done (or nothing to do), 1 refused (file untouched), 2 bad options."""
    try:
        form = _form(args)
        path = settings_path(args)
        user = user_settings_path().absolute()
        if args.uninstall:
            status = _uninstall(path, args.dry_run)
            if args.otel and user != path:
                status = max(status, _uninstall(user, args.dry_run))
            return status
        if not args.otel:
            return _install(path, [_hooks_part(form)], args.dry_run)
        otel = _otel_part(_telemetry(args))
        if user == path:
            return _install(path, [_hooks_part(form), otel], args.dry_run)
        # Claude Code reads telemetry settings from the user's file only: the hooks stay where asked.
        status = _install(path, [_hooks_part(form)], args.dry_run)
        return max(status, _install(user, [otel], args.dry_run))
    except UsageError as exc:
        print(f"hookdb install-hooks: {exc}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hookdb install-hooks: {exc}", file=sys.stderr)
        return 1
