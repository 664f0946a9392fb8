"""Every classification the collector applies, in one place (the seed's hookDBBridgeConfig).

Adding an agent type, a report category or a session status touches only this module: the database
has no CHECK constraints for them, and the projections read everything from here.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

# -- Database errors -----------------------------------------------------------------------------------

# SQLSTATE classes of errors about the data of a row (22 data exception, 23 integrity constraint
# violation): the batch is split to isolate the rows at fault, and the breaker is not told.
DATA_ERROR_CLASSES = frozenset({"22", "23"})

# SQLSTATE classes that say the database is not able to take writes right now, whatever the rows: 08
# connection, 25 invalid transaction state (a read-only server), 26 a prepared statement gone (a
# transaction pooler that ``database.pooler`` does not know of), 28 authorization, 3D a missing database,
# 40 rollbacks (deadlock, serialization), 42 a missing table or a revoked grant, 53 resources (disk full,
# too many connections), 55 object not ready (lock not available), 57 operator intervention (shutdown,
# statement timeout), 58 system (I/O), F0 configuration, XX internal. They and errors below SQL (timeouts,
# I/O) count against the breaker and the batch is retried whole until the database recovers.
AVAILABILITY_CLASSES = frozenset(
    {"08", "25", "26", "28", "3D", "40", "42", "53", "55", "57", "58", "F0", "XX"}
)


def sqlstate_class(exc: BaseException) -> str:
    """The two-character SQLSTATE class of a database error; ``"io"`` for errors below SQL."""
    code = getattr(exc, "sqlstate", None)
    return code[:2] if isinstance(code, str) else "io"


def is_missing_partition(exc: BaseException) -> bool:
    """23514 raised by partition routing (no partition of ``hook_audit_log`` for the row's time): a schema
    problem, not bad data; the sink creates the partition and writes again. A CHECK constraint's 23514
    names its constraint, and a trigger's names no table."""
    return (
        getattr(exc, "sqlstate", None) == "23514"
        and getattr(exc, "constraint_name", None) is None
        and getattr(exc, "table_name", None) is not None
    )


def is_data_error(exc: BaseException) -> bool:
    """An error about the data of a row: its batch is split to isolate the rows at fault."""
    return sqlstate_class(exc) in DATA_ERROR_CLASSES and not is_missing_partition(exc)


def may_be_row_fault(exc: BaseException) -> bool:
    """A database error of no class above (54000 index row size, a trigger's RAISE, ...): a row may cause it.
    Once is a failure like any other; if it repeats for the same batch, the batch is split like a data
    error, so one row cannot stop every tenant's delivery."""
    return sqlstate_class(exc) not in DATA_ERROR_CLASSES | AVAILABILITY_CLASSES | {"io"}


class Refusal(NamedTuple):
    """Why the server or a pooler refused a connection's setup (``cause``, one per distinct problem) and
    what to change (``fix``)."""

    cause: str
    fix: str


# Connection setups the server or a pooler refuses, as (SQLSTATEs, words of the message, cause, fix): no
# retry can succeed until someone changes a setting, so the collector says which, once (the breaker still
# retries). pgbouncer sends most of its refusals as 08P01 and tells them apart by their message. Lost
# prepared statements are the same mistake found later, by the first statement through the pooler.
SETUP_REFUSALS: tuple[tuple[frozenset[str], tuple[str, ...], str, str], ...] = (
    (
        frozenset(),
        ("unsupported startup parameter",),
        "startup_parameter",
        'a pooler refused a startup parameter: set database.pooler = "transaction" (then hookdb sends none '
        "but application_name), or name it in the pooler's ignore_startup_parameters",
    ),
    (
        frozenset({"26000", "42P05"}),
        (),
        "prepared_statements",
        "prepared statements do not survive from one transaction to the next: a transaction-mode pooler "
        'is in between; set database.pooler = "transaction" (then asyncpg keeps none)',
    ),
    (
        frozenset({"28000", "28P01"}),
        ("password authentication failed", "no such user", "server login has been failing"),
        "login",
        "the login was refused: check the DSN's user and password (or database.password_file), the "
        "server's pg_hba.conf, and a pooler's auth_file",
    ),
    (
        frozenset({"3D000"}),
        ("no such database", "does not exist"),
        "database",
        "the database does not exist: create it (hookdb migrate then makes its tables), or fix the DSN's "
        "database name (and a pooler's [databases])",
    ),
    (
        frozenset({"53300"}),
        ("too many connections", "too many clients", "no more connections allowed", "remaining connection"),
        "connection_slots",
        "no connection slot is free: raise the server's max_connections (or a pooler's max_client_conn), "
        "lower database.writers or api.pool_size, or put a transaction pooler in front "
        '(database.pooler = "transaction")',
    ),
)


def setup_refusal(exc: BaseException) -> Refusal | None:
    """What to change if ``exc`` says the server or a pooler refused the connection's setup, else None."""
    code = getattr(exc, "sqlstate", None)
    message = str(exc).lower()
    for codes, words, cause, fix in SETUP_REFUSALS:
        if code in codes or (code == "08P01" and any(w in message for w in words)):
            return Refusal(cause, fix)
    return None


# -- Claude Code hooks ---------------------------------------------------------------------------------

# Events for which Claude Code runs command hooks only, never http ones (verified with 2.1.332): with
# ``install-hooks --http`` they get a hookdb-emit command hook, or they would be lost without a word.
COMMAND_ONLY_EVENTS = frozenset({"SessionStart", "Setup"})

# What ``install-hooks`` installs for each event. Every command hook is a process start: hookdb-emit
# answering once the event is in a real collector's spool took 21-22 ms of wall time and 19.5 ms of CPU
# at the median for every event alike (PostToolUse, MessageDisplay, PostToolBatch, Stop; 2 shared cores
# at load 6; tests/bench/bench_event_choice.py), so 4 of the 12 hooks of the recorded run were ~90 ms of
# waiting; a synchronous one holds Claude Code until it answers. By default:
# - synchronous: every event but those below, so that the event is recorded before Claude Code goes on.
# - never: WorktreeCreate, whose hook *replaces* ``git worktree add`` and must print the new path.
NEVER_INSTALLED_EVENTS = frozenset({"WorktreeCreate"})
# - not by default (``install-hooks --all-events`` adds them, in the background): MessageDisplay fires
#   for every message Claude Code displays (2 of the 12 hooks of the recorded 2.1.332 run, and more the
#   longer the answers), each a process start on the path of the display, and its text is already in the
#   transcript and in Stop's last_assistant_message.
OPT_IN_EVENTS = frozenset({"MessageDisplay"})
# - in the background (``"async": true``) even without ``--async``: PostToolBatch fires after every tool
#   batch (2 of the 12) before Claude Code sends the results on, and repeats what the batch's PostToolUse
#   events recorded; in the background it costs a process start but no wait. Its http hooks (``--http``)
#   start no process and stay synchronous.
BACKGROUND_EVENTS = frozenset({"PostToolBatch", "MessageDisplay"})
# - synchronous even with ``--async``: the events that fire as the session ends, because Claude Code
#   kills background hooks at teardown, which would lose exactly those events.
SYNC_EVENTS = frozenset({"Stop", "StopFailure", "SessionEnd", "WorktreeRemove"})

# -- Sessions ------------------------------------------------------------------------------------------

VALID_SESSION_STATUSES = frozenset({"running", "completed", "failed", "ended"})
INITIAL_STATUS = "running"

# The event that moves a session to a status. Claude Code fires Stop at the end of every turn (the
# session is then complete but may resume: a later prompt sets it running again); StopFailure when a
# turn fails; SessionEnd when the session is over for good.
EVENT_STATUS = MappingProxyType(
    {
        "SessionStart": "running",
        "UserPromptSubmit": "running",
        "Stop": "completed",
        "StopFailure": "failed",
        "SessionEnd": "ended",
    }
)

# The event the Agent SDK wrapper's record_result() sends with the final ResultMessage.
RESULT_EVENT = "Result"

# -- Reports -------------------------------------------------------------------------------------------

VALID_REPORT_TYPES = frozenset({"report", "summary", "analysis", "plan", "review"})

# Tools whose PostToolUse means a file was written.
WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit"})

# Path patterns (fnmatch-style, ``**`` for any directories) → report type; the first match wins.
REPORT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("**/reports/**/summary*.md", "summary"),
    ("**/reports/**/analysis*.md", "analysis"),
    ("**/reports/**/plan*.md", "plan"),
    ("**/reports/**/review*.md", "review"),
    ("**/reports/**/*.md", "report"),
)

# -- QA scores -----------------------------------------------------------------------------------------

# A session's QA score is the first number its newest report or agent state file gives as "QA score: 87",
# "qa_score": 92.5 or the like. A PostgreSQL regular expression: the first group is the number.
QA_SCORE_PATTERN = r"""(?i)qa[ _-]?score["']?\s*[:=]\s*["']?([0-9]{1,6}(?:\.[0-9]{1,6})?)"""

# Edges of the QA score distribution the read API reports: [0, 10), [10, 20), ... [90, 100]; a score
# outside the range counts in the nearest end bucket.
QA_SCORE_BUCKETS: tuple[int, ...] = tuple(range(0, 101, 10))

# -- Agent state files ---------------------------------------------------------------------------------

# Globs, relative to the session's cwd, of the state files to keep when a subagent of that type stops
# (read from disk: agents write them without going through a hooked tool). "*" applies to every type.
STATE_FILE_GLOBS = MappingProxyType(
    {
        "*": ("state/*.json", ".claude/state/*.json"),
        "section-writer": ("state/section-writer-*.json", "state/sections/*.json"),
    }
)

# -- Tool calls in the timeline ------------------------------------------------------------------------

# Events that open and close a tool call; the read API pairs them by tool_use_id into a duration.
TOOL_CALL_START = "PreToolUse"
TOOL_CALL_END = frozenset({"PostToolUse", "PostToolUseFailure"})

# -- Which events the projections handle ---------------------------------------------------------------

# Event type → the projection handler that consumes it (see projections.HANDLERS; a test keeps the two
# in sync). Every other event only counts toward its session's activity.
HANDLED_EVENTS = MappingProxyType(
    {
        "SessionStart": "session_start",
        "UserPromptSubmit": "status",
        "Stop": "status",
        "StopFailure": "status",
        "SessionEnd": "session_end",
        "SubagentStart": "subagent_start",
        "SubagentStop": "subagent_stop",
        "PostToolUse": "post_tool_use",
        RESULT_EVENT: "result",
    }
)

# -- Full-text search ------------------------------------------------------------------------------------

# Event type → (the kind of search document it makes, the payload field whose text is searched): prompts,
# assistant messages, tool inputs and outputs (a failure's error as its output). Reports are searched too,
# as kind SEARCH_REPORT. Every other event is not searched (store/search.py).
SEARCH_FIELDS = MappingProxyType(
    {
        "UserPromptSubmit": ("prompt", "prompt"),
        "Stop": ("reply", "last_assistant_message"),
        "SubagentStop": ("reply", "last_assistant_message"),
        "PreToolUse": ("tool_input", "tool_input"),
        "PostToolUse": ("tool_output", "tool_response"),
        "PostToolUseFailure": ("tool_output", "error"),
    }
)
SEARCH_REPORT = "report"

# Limits on what the collector reads from disk for one report or state file.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_STATE_FILES = 64

# -- Usage (the ledger) ----------------------------------------------------------------------------------

# Events whose ``transcript_path`` (and SubagentStop's ``agent_transcript_path``) the collector reads for
# what is new since its last read: the requests each turn, compaction or subagent made, and their cost.
TRANSCRIPT_EVENTS = frozenset({"Stop", "SubagentStop", "PreCompact", "SessionEnd"})
# The event after which a session's transcript is not expected to grow.
SESSION_END_EVENT = "SessionEnd"

# (source, event type) of the Agent SDK's ``ResultMessage`` (hookdb.client.agent_sdk.record_result): its
# ``model_usage`` gives the session's usage per model, summary rows of the ledger (store/usage.py).
SDK_RESULT_EVENT = ("agent-sdk", RESULT_EVENT)
# (source, event type) of the events that report usage: Claude Code's OTLP ``claude_code.api_request``
# log records (one model API request each), stored as events by the OTLP receiver, and the SDK's result.
USAGE_EVENTS = frozenset({("claude-code-otel", "api_request"), SDK_RESULT_EVENT})

# Limits on reading transcripts: a transcript larger than this is not read at all (like a report over
# MAX_FILE_BYTES, but transcripts grow long), and what is new is read in chunks of TRANSCRIPT_CHUNK_BYTES
# so memory stays bounded however much a turn wrote.
MAX_TRANSCRIPT_BYTES = 1024 * 1024 * 1024
TRANSCRIPT_CHUNK_BYTES = 1024 * 1024
# Subagent transcripts read per session event at most (``<session>/subagents/agent-*.jsonl``).
MAX_SUBAGENT_TRANSCRIPTS = 256
# Transcripts whose read position the collector keeps in memory, the least recently read dropped first (one
# dropped, or a session's once it ended, is read from its start again the next time: counted once all the
# same, since the ledger merges what it already holds).
MAX_TRANSCRIPT_TAILS = 4096
