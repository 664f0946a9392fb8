"""``hookdb backfill claude-code [PATH]`` and ``hookdb backfill sessions DIR``: import past sessions.

:mod:`hookdb.collector.backfill` maps transcripts and session directories to hook events; this module
writes them, shows progress and reports. Both ways in write rows that are the same as live ones, with
source ``backfill``:

- **Straight to PostgreSQL** (``--dsn``, ``$HOOKDB_DSN`` or ``database.dsn``, as for ``hookdb
  migrate``): each event becomes an envelope (``encode_envelope``, tenant ``--tenant``, default
  ``default``) and a row (``event_row``, as the collector's intake does), written in batches of
  ``--batch-size`` (1000) by ``PostgresSink``, the collector's own write path: one transaction per
  batch, ``ON CONFLICT DO NOTHING``, projections of the new rows only. A session that already has
  events of another source in that tenant was captured live and is skipped whole: live events carry
  random ids, so its events would count twice.
- **Through a running collector** (``--socket PATH``): acknowledged frames over one connection, at
  most 512 unacknowledged; a refusal stops the run, naming the event's ``file:line`` and the reason.
  ``--tenant`` is a claim the collector checks against the uid; without it the collector picks. This
  mode cannot read the database, so sessions captured live are **not** detected: use the direct mode
  for transcripts of sessions that were also captured live. An event larger than
  ``listener.max_frame_bytes`` is skipped and reported.

**The usage ledger** comes out as live capture makes it, by the same code: the events name their
transcripts (``Stop``, ``SubagentStop``, ``SessionEnd`` carry ``transcript_path`` /
``agent_transcript_path``), and the sink's ledger step (``store/ledger.py``) reads them as it reads a live
session's, with its subagents' transcripts and the last ``cost-state``: the same ``usage_ledger`` rows,
read offsets and session totals. The backfill process is the events' sender (its pid/uid/gid as the
peer), so only transcripts it owns are read, as for a live sender; through a collector the socket's peer
is. A second run writes no new event, so the ledger is not read again (and would merge to the same rows
if it were).

Re-running either is safe: event ids are deterministic, a second run adds no row.

A terminal gets one self-overwriting progress line on stderr (files done of all, events, events per
second); otherwise nothing shows until the end. The summary goes to stdout; malformed lines and
skipped files to stderr as ``path:line: reason``, the first 20 of them. Exit status: 0 when done
(malformed lines do not fail a run: a transcript still being written ends in a partial line), 1 when
the database or the collector failed (what was written stays; run again to finish), 2 for a usage
error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hookdb.collector import config as config_mod
from hookdb.collector.admin.usage import command
from hookdb.collector.ops import logs

if TYPE_CHECKING:
    import _socket

    from hookdb.collector.admin.backfill import Event, SeedSession, Tally, TranscriptSession
    from hookdb.collector.spool.entry import Peer
    from hookdb.collector.store.connect import ConnectOptions
    from hookdb.collector.store.rows import Row

    Unit = TranscriptSession | SeedSession
    EventsOf = Callable[[Any, Tally], Iterator[Event]]

DEFAULT_TRANSCRIPTS = "~/.claude/projects"
DEFAULT_TENANT = "default"
WINDOW = 512  # unacknowledged frames in --socket mode: replies (about 70 bytes each) fit the socket buffer
CHUNK = 64  # frames per write to the socket
ACK_TIMEOUT = 60.0
LIST_PROBLEMS = 20

log = logs.get("hookdb.backfill")

_LIVE_SESSIONS = """
SELECT s FROM unnest($2::text[]) AS s
WHERE EXISTS (SELECT 1 FROM hook_audit_log l
              WHERE l.tenant_id = $1 AND l.session_id = s AND l.source <> 'backfill')
"""


class BackfillError(Exception):
    """The run cannot go on; the message says why."""


def add_commands(commands: Any) -> None:
    """Add ``backfill claude-code`` and ``backfill sessions`` to ``hookdb``'s subcommands."""
    parser = command(
        commands,
        "backfill",
        "import past sessions: Claude Code transcripts, session directories",
        "hookdb backfill claude-code ~/.claude/projects",
        "hookdb backfill sessions ./sessions --dsn postgresql://hookdb@db/hookdb",
    )
    sources = parser.add_subparsers(dest="action", required=True, metavar="SOURCE")
    claude = command(
        sources,
        "claude-code",
        "Claude Code transcripts (JSONL) with their subagents' transcripts",
        "hookdb backfill claude-code",
        "hookdb backfill claude-code ~/.claude/projects/-home-me-repo --socket /run/hookdb/hookdb.sock",
    )
    claude.add_argument(
        "transcripts",
        nargs="?",
        default=DEFAULT_TRANSCRIPTS,
        metavar="PATH",
        help="a transcript, or a directory searched for them (default: %(default)s)",
    )
    _options(claude)
    sessions = command(
        sources,
        "sessions",
        "session directories: markdown reports under reports/, JSON state files",
        "hookdb backfill sessions ./sessions",
    )
    sessions.add_argument("directory", metavar="DIR", help="each subdirectory is a session, named by it")
    _options(sessions)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help="PostgreSQL DSN to write to (database.dsn, $HOOKDB_DSN); default: the embedded server",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="send through the collector on this socket instead (sessions captured live are not detected)",
    )
    parser.add_argument(
        "--tenant",
        help=f"tenant of the events (default: {DEFAULT_TENANT!r} with --dsn; the collector picks with "
        "--socket)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="N",
        help="events per transaction with --dsn (default: %(default)s)",
    )
    config_mod.add_options(parser)


def _envelope(event: Event, tenant: str | None, *, ack: bool) -> bytes:
    from hookdb.client.wire import encode_envelope
    from hookdb.collector.admin.backfill import SOURCE

    return encode_envelope(
        event_id=event.event_id,
        occurred_at_ns=event.occurred_at_ns,
        source=SOURCE,
        event_type=event.event_type,
        session_id=event.session_id,
        tenant=tenant,
        payload=event.payload,
        ack=ack,
    )


def run(args: argparse.Namespace, config: config_mod.Config) -> int:
    """Run ``hookdb backfill claude-code|sessions``; return the exit status."""
    from hookdb.collector.admin import backfill as bf
    from hookdb.collector.spool.entry import Peer

    problem = _usage_problem(args, config)
    if problem:
        print(f"hookdb: backfill: {problem}", file=sys.stderr)
        return 2
    tally = bf.Tally(max_listed=LIST_PROBLEMS)
    units: Sequence[Unit]
    events_of: EventsOf
    if args.action == "claude-code":
        root = Path(args.transcripts).expanduser()
        units, events_of, label = bf.find_transcripts(root, tally), bf.transcript_events, "files"
    else:
        root = Path(args.directory).expanduser()
        units, events_of, label = bf.find_seed_sessions(root, tally), bf.seed_events, "directories"
    # The projections read transcripts (the usage ledger), report and state files only for a sender that
    # owns them: the backfill is that sender, as it would be over the collector's socket.
    peer = Peer(os.getpid(), os.getuid(), os.getgid())
    progress = Progress(tally, label, sys.stderr)
    started = time.monotonic()
    status, error = 0, None
    server = None
    try:
        if args.socket:
            _send(_stream(units, events_of, tally), tally, args.socket, args.tenant, config, progress)
        else:
            import trio

            from hookdb.collector.store import embedded
            from hookdb.collector.store.connect import ConnectOptions

            tenant = args.tenant or DEFAULT_TENANT
            dsn = config.dsn
            if dsn is None:  # the embedded server of the state directory, as the collector uses
                server, dsn = embedded.start(config.state_dir)
            options = ConnectOptions.from_config(config, dsn, application_name="hookdb-backfill")
            trio.run(_direct, units, events_of, tally, options, tenant, peer, args.batch_size, progress)
    except BaseException as exc:
        status, error = _failure(exc)
    finally:
        progress.close()
        if server is not None:
            server.cleanup()
    elapsed = time.monotonic() - started
    _report(tally, label, elapsed, socket_mode=bool(args.socket))
    fields = {
        k: getattr(tally, k) for k in ("files_done", "sessions", "sessions_skipped", "events", "malformed")
    }
    if error:
        log.error("backfill.failed", source=args.action, error=error, **fields)
        print(f"hookdb: backfill: {error}", file=sys.stderr)
    else:
        log.info("backfill.finished", source=args.action, seconds=round(elapsed, 3), **fields)
    return status


def _usage_problem(args: argparse.Namespace, config: config_mod.Config) -> str | None:
    from hookdb.collector.admin.backfill import valid_label

    if args.socket and args.dsn:
        return "give either --dsn (write to PostgreSQL) or --socket (send to a running collector)"
    if args.tenant is not None and not valid_label(args.tenant):
        return f"not a tenant name: {args.tenant!r}"
    if args.batch_size < 1:
        return "--batch-size must be at least 1"
    path = Path(args.transcripts if args.action == "claude-code" else args.directory).expanduser()
    if args.action == "sessions" and not path.is_dir():
        return f"{path}: not a directory"
    if not path.exists():
        return f"{path}: no such file or directory"
    return None


def _failure(exc: BaseException) -> tuple[int, str]:
    """The exit status and message of what stopped the run; anything unexpected propagates."""
    import asyncpg

    from hookdb.client.transport import Refused
    from hookdb.collector.store.embedded import EmbeddedUnavailable
    from hookdb.collector.store.migrate import SchemaError

    cause = exc
    while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
        cause = cause.exceptions[0]  # trio and trio-asyncio may wrap what they raise in a group
    if isinstance(cause, KeyboardInterrupt):
        return 130, "interrupted (running it again is safe: nothing is imported twice)"
    if isinstance(
        cause,
        BackfillError
        | Refused
        | SchemaError
        | EmbeddedUnavailable
        | OSError
        | asyncpg.PostgresError
        | asyncpg.InterfaceError,
    ):
        return 1, f"{cause} (running it again is safe: nothing is imported twice)"
    raise exc


def _stream(units: Iterable[Unit], events_of: EventsOf, tally: Tally) -> Iterator[Event]:
    """The events of every session in turn, counting the sessions that have any."""
    from hookdb.collector.admin.backfill import valid_label

    for unit in units:
        if not valid_label(unit.session_id):
            tally.skip(unit.session_id[:300], "not usable as a session id (1 to 256 characters, no U+0000)")
            tally.files_done += unit.file_count
            continue
        counted = False
        for event in events_of(unit, tally):
            if not counted:
                tally.sessions += 1
                counted = True
            yield event


# -- Straight to PostgreSQL ------------------------------------------------------------------------------


def _rows(
    events: Iterable[Event], tally: Tally, tenant: str, peer: Peer | None, size: int
) -> Iterator[list[Row]]:
    """Batches of rows, built exactly as the collector builds them from frames."""
    from hookdb.client.wire import ProtocolError
    from hookdb.collector.store.rows import event_row

    rows: list[Row] = []
    received_at = datetime.now(UTC)
    for event in events:
        body = _envelope(event, tenant, ack=False)
        try:
            rows.append(event_row(body, peer, received_at, tenant))
        except ProtocolError as exc:
            tally.skip(event.where, f"{event.event_type} cannot be stored: {exc}")
            continue
        tally.events += 1
        if len(rows) >= size:
            yield rows
            rows, received_at = [], datetime.now(UTC)
    if rows:
        yield rows


async def _live_sessions(options: ConnectOptions, tenant: str, session_ids: list[str]) -> set[str]:
    """The sessions among ``session_ids`` that have events of another source than backfill in ``tenant``."""
    import trio_asyncio

    async def query() -> set[str]:
        conn = await options.connect()
        try:
            async with conn.transaction():
                await options.begin(conn, tenant)
                return {r[0] for r in await conn.fetch(_LIVE_SESSIONS, tenant, session_ids)}
        finally:
            await conn.close()

    return await trio_asyncio.aio_as_trio(query)()


async def _direct(
    units: Sequence[Unit],
    events_of: EventsOf,
    tally: Tally,
    options: ConnectOptions,
    tenant: str,
    peer: Peer | None,
    batch_size: int,
    progress: Progress,
) -> None:
    import trio_asyncio

    from hookdb.collector.admin.backfill import session_ids
    from hookdb.collector.store.sink import PostgresSink

    async with trio_asyncio.open_loop():
        sink = await PostgresSink.connect(options)
        try:
            live = await _live_sessions(options, tenant, session_ids(units))
            todo = []
            for unit in units:
                if unit.session_id in live:
                    tally.sessions_skipped += 1
                    tally.files_done += unit.file_count
                    log.info("backfill.session_skipped", session_id=unit.session_id, reason="captured live")
                else:
                    todo.append(unit)
            # Batches are mapped on this thread between writes: nothing else runs here, and a worker thread
            # measured slower (every round trip of a write then waits for the GIL).
            for rows in _rows(_stream(todo, events_of, tally), tally, tenant, peer, batch_size):
                tally.written += await sink.write(rows)
                progress.update()
        finally:
            await sink.aclose()


# -- Through a running collector -------------------------------------------------------------------------


def _send(
    events: Iterable[Event],
    tally: Tally,
    path: str,
    tenant: str | None,
    config: config_mod.Config,
    progress: Progress,
) -> None:
    """Send every event as an acknowledged frame over one connection, a window of them in flight."""
    from hookdb.client import transport
    from hookdb.client.wire import frame

    max_frame = config.listener.max_frame_bytes
    try:
        sock = transport.connect(path, ACK_TIMEOUT)
    except OSError as exc:
        raise BackfillError(f"cannot connect to the collector at {path}: {exc.strerror or exc}") from None
    in_flight: deque[Event] = deque()
    pending: list[bytes] = []
    try:
        for event in events:
            body = _envelope(event, tenant, ack=True)
            if len(body) > max_frame:
                tally.skip(
                    event.where,
                    f"{event.event_type} of {len(body)} bytes is over the collector's frame limit "
                    f"(listener.max_frame_bytes = {max_frame}); import it with --dsn",
                )
                continue
            pending.append(frame(body))
            in_flight.append(event)
            tally.events += 1
            if len(pending) >= CHUNK:
                _flush(sock, pending, in_flight, tally)
            while len(in_flight) > WINDOW:  # > CHUNK, so the oldest has been sent
                _await_ack(sock, in_flight.popleft(), tally)
                progress.update()
        _flush(sock, pending, in_flight, tally)
        while in_flight:
            _await_ack(sock, in_flight.popleft(), tally)
        progress.update()
    finally:
        sock.close()


def _flush(sock: _socket.socket, pending: list[bytes], in_flight: deque[Event], tally: Tally) -> None:
    try:
        sock.sendall(b"".join(pending))
    except OSError:
        # The collector closes the connection after refusing a frame: its reply says which and why.
        while in_flight:
            _await_ack(sock, in_flight.popleft(), tally)
        raise
    pending.clear()


def _await_ack(sock: _socket.socket, event: Event, tally: Tally) -> None:
    from hookdb.client.protocol import decode_reply
    from hookdb.client.transport import Refused, await_reply

    try:
        await_reply(sock, event.event_id, time.monotonic() + ACK_TIMEOUT)
    except Refused as exc:
        raise BackfillError(
            f"the collector refused {event.event_type} {event.event_id} from {event.where}: "
            f"{decode_reply(exc.reply)}"
        ) from None
    tally.acknowledged += 1


# -- Progress and summary --------------------------------------------------------------------------------


class Progress:
    """One self-overwriting line on a terminal, at most ten times a second; nothing otherwise."""

    def __init__(self, tally: Tally, label: str, stream: TextIO) -> None:
        self._tally = tally
        self._label = label
        self._stream = stream
        self.enabled = stream.isatty()
        self._started = self._shown = time.monotonic()

    def update(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < 0.1:
            return
        self._shown = now
        t = self._tally
        rate = t.events / max(now - self._started, 1e-6)
        self._stream.write(
            f"\r\x1b[Kbackfill: {self._label} {t.files_done}/{t.files_total} · {t.events:,} events"
            f" · {rate:,.0f} events/s"
        )
        self._stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            self._stream.write("\n")
            self._stream.flush()


def _report(tally: Tally, label: str, elapsed: float, *, socket_mode: bool) -> None:
    t = tally
    if socket_mode:
        sessions = f"{t.sessions} read (sessions captured live are detected only with --dsn)"
        events = f"{t.events} sent, {t.acknowledged} acknowledged by the collector"
    else:
        sessions = f"{t.sessions} read, {t.sessions_skipped} skipped (already captured live)"
        events = f"{t.events} read, {t.written} new rows"
    lines = [
        (label, f"{t.files_done} of {t.files_total}"),
        ("sessions", sessions),
        ("events", events),
        ("malformed", f"{t.malformed} lines"),
    ]
    if t.skipped:
        lines.append(("skipped", f"{t.skipped} files or events"))
    if t.unpaired:
        lines.append(("unpaired", f"{t.unpaired} tool results without their tool use"))
    if t.usage_skipped:
        plural = "s" if t.usage_skipped != 1 else ""
        lines.append(("usage", f"not read from {t.usage_skipped} transcript{plural} another uid owns"))
    lines.append(("time", f"{elapsed:.2f} s, {t.events / max(elapsed, 1e-6):,.0f} events/s"))
    print("\n".join(f"{name + ':':<12} {value}" for name, value in lines), flush=True)
    for problem in t.problems:
        print(problem, file=sys.stderr)
    if t.problem_count > len(t.problems):
        print(f"... and {t.problem_count - len(t.problems)} more", file=sys.stderr)
