"""``hookdb-emit``: the Claude Code command hook. Reads the hook JSON on stdin and sends one frame.

The frame asks for an ack; when the collector is unreachable or does not ack within the time-out, the
event goes to the outbox, which the collector drains later. After a time-out, the runs of the next
seconds only probe briefly (see ``transport.Unresponsive``), so a hung collector costs an agent's run one
time-out, not one per hook. It always exits 0 with empty stdout, so
the agent behaves exactly as it would without hookdb; anything that goes wrong is one line on stderr.
Only modules that cost no start-up time are imported here.
"""

import os
import sys
import time

from hookdb.client.paths import default_socket_path, outbox_dir
from hookdb.client.transport import Refused, Unresponsive, deliver
from hookdb.client.wire import DEFAULT_MAX_FRAME_BYTES, encode_envelope, frame, new_event_id

USAGE = "usage: hookdb-emit [--source NAME] [--socket PATH] [--tenant NAME] [--timeout SECONDS] < hook.json"
SEND_TIMEOUT_ENV = "HOOKDB_EMIT_TIMEOUT"
DEFAULT_SEND_TIMEOUT = 0.5


class _JsonContext:
    """What ``_json.make_scanner`` reads from a decoder: parse JSON without importing ``json`` or ``re``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}  # noqa: RUF012 - the C scanner reads it; never mutated here

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")  # NaN and Infinity: jsonb refuses them too


def _parse_hook(data: bytes) -> dict[str, object]:
    """Parse the hook input; raises ``ValueError`` unless it is one JSON object."""
    text = data.decode()
    try:
        from _json import make_scanner
    except ImportError:  # an interpreter without CPython's accelerator
        import json

        value: object = json.loads(text, parse_constant=_JsonContext.parse_constant)
    else:
        start = len(text) - len(text.lstrip(" \t\n\r"))
        try:
            value, end = make_scanner(_JsonContext())(text, start)
        except StopIteration as exc:
            raise ValueError(f"no JSON value at character {exc.value}") from None
        if text[end:].strip(" \t\n\r"):
            raise ValueError(f"extra data after the JSON value at character {end}")
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")  # noqa: TRY004 - bad input, one error type
    return value


def _options(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name not in ("--source", "--socket", "--tenant", "--timeout"):
            raise ValueError(f"unknown argument {arg!r}; {USAGE}")
        opts[name[2:]] = value if eq else next(it, "")
    return opts


def _label(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def run(argv: list[str], stdin: bytes) -> str | None:
    """Send the hook event in ``stdin``; return what went wrong, or ``None`` when it was sent."""
    occurred_at_ns = time.time_ns()
    try:
        opts = _options(argv)
        timeout = float(opts.get("timeout") or os.environ.get(SEND_TIMEOUT_ENV) or DEFAULT_SEND_TIMEOUT)
    except ValueError as exc:
        return f"bad arguments, nothing sent: {exc}"
    try:
        hook = _parse_hook(stdin)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply for any collector
        return f"stdin is not a hook event, nothing sent: {exc}"
    event_id = new_event_id()

    def envelope(payload: bytes) -> bytes:
        return encode_envelope(
            event_id=event_id,
            occurred_at_ns=occurred_at_ns,
            source=opts.get("source") or "claude-code",
            event_type=_label(hook.get("hook_event_name")) or "Unknown",
            session_id=_label(hook.get("session_id")),
            tenant=opts.get("tenant") or None,
            payload=payload,
            ack=True,
        )

    body = envelope(stdin)
    if len(body) > DEFAULT_MAX_FRAME_BYTES:  # too big for any collector: shrink it (rare, so imported here)
        from hookdb.client.oversize import shrink

        body = envelope(shrink(stdin, DEFAULT_MAX_FRAME_BYTES - (len(body) - len(stdin))))
    path = opts.get("socket") or default_socket_path()
    outbox_path = outbox_dir(path)
    unresponsive = Unresponsive(outbox_path)
    try:
        deliver(path, frame(body), event_id, unresponsive.timeout(timeout))
    except Refused as exc:
        unresponsive.forget()
        return f"the collector refused the event: {_reason(exc.reply)}"
    except OSError as exc:
        from hookdb.client.outbox import OutboxFile  # the fallback path may take its time

        try:
            outbox = OutboxFile(outbox_path)
            outbox.append(body)
            outbox.close()
        except OSError as outbox_exc:
            return f"collector not reachable at {path} ({exc}) and outbox failed, event lost: {outbox_exc}"
        if isinstance(exc, TimeoutError):
            unresponsive.remember()
        return f"collector not reachable at {path} ({exc}); event kept in {outbox.path}"
    unresponsive.forget()
    return None


def _reason(reply: bytes) -> str:
    from hookdb.client.protocol import decode_reply  # the rare path may pay for msgspec

    return decode_reply(reply)


HELP = f"""{USAGE}

Send the Claude Code hook event on stdin to the hookdb collector (the command hook that
`hookdb install-hooks` installs). It waits for the collector's ack; without one in time the event is
kept in the outbox, which the collector drains later. It always exits 0 and never writes to stdout,
so the agent behaves as it would without hookdb; a problem is one line on stderr (Claude Code shows
it only in its debug output).

options:
  --source NAME       where the event comes from (default: claude-code)
  --socket PATH       the collector's socket (default: $HOOKDB_SOCKET or the per-user default)
  --tenant NAME       the tenant to write (default: the one your user is mapped to)
  --timeout SECONDS   how long to wait for the ack (default: {DEFAULT_SEND_TIMEOUT}, ${SEND_TIMEOUT_ENV})
  --help, --version   print this, or the version, and exit

example:
  echo '{{"hook_event_name": "Stop", "session_id": "s1"}}' | hookdb-emit
"""


def _version() -> str:
    from importlib.metadata import version  # only when asked: it costs start-up time

    return f"hookdb-emit {version('hookdb')}"


def main() -> int:
    """Entry point of ``hookdb-emit``; exits 0 whatever happens.

    After a hook event it ends the process with ``os._exit``: the interpreter's orderly shutdown
    (finalizing every module and object) costs more than a millisecond of the agent's waiting, and
    nothing is left to do by then (stderr flushed, sockets and the outbox file closed).
    """
    asked = {"-h", "--help", "--version"} & set(sys.argv[1:])
    if asked:  # a person at a terminal: answer without reading stdin
        sys.stdout.write(_version() + "\n" if asked == {"--version"} else HELP)
        return 0
    try:
        stdin = sys.stdin.buffer.read()  # read it all: a hook that leaves stdin unread breaks the agent
        problem = run(sys.argv[1:], stdin)
    except BaseException as exc:
        problem = f"internal error: {exc!r}"
    if problem:
        try:
            sys.stderr.write(f"hookdb-emit: {problem}\n")
            sys.stderr.flush()
        except OSError:
            pass
    os._exit(0)
