"""Every collector setting, its default and its name (``section.key``), in one place.

Settings come from defaults, then the TOML file, then ``--set section.key=value`` and the dedicated
flags and environment variables; msgspec checks names and types, so a typo is an error, not a default.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from hookdb.client.paths import default_socket_path, outbox_dir
from hookdb.client.wire import DEFAULT_MAX_FRAME_BYTES

DEFAULT_PATH = "/etc/hookdb/collector.toml"
CONFIG_ENV = "HOOKDB_CONFIG"
DSN_ENV = "HOOKDB_DSN"
STATE_DIR_ENV = "HOOKDB_STATE_DIR"

Positive = Annotated[int, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, lt=1)]
MAX_AUTO_PROCESSES = 4  # delivery_processes = "auto": beyond it PostgreSQL, not delivery, is the limit


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CollectorSection(_Section):
    state_dir: str = ""
    """Spool, embedded PostgreSQL data and other state; empty means the platform default."""
    shutdown_seconds: Seconds = 10.0
    """On SIGTERM/SIGINT, how long the final flush may take before the collector exits anyway."""


class ListenerSection(_Section):
    socket: str = ""
    """Unix socket path; empty means ``$HOOKDB_SOCKET`` or the default path clients also use."""
    socket_mode: int = 0o660
    """Permission bits of the socket file."""
    socket_owner: str = ""
    """User (name or id) to own the socket file; empty keeps the collector's."""
    socket_group: str = ""
    """Group (name or id) of the socket file; empty keeps the collector's."""
    max_frame_bytes: Positive = DEFAULT_MAX_FRAME_BYTES
    """Largest frame or outbox record stored as it came. A socket frame or HTTP hook body over it is stored
with its payload's largest strings replaced by markers of their size and sha256; hookdb's clients shrink
events the same way to 64 MiB, which a socket frame may not pass. Outbox records over it are refused."""
    read_bytes: Positive = 256 * 1024
    """Bytes read from a connection at a time; with ``max_frame_bytes``, bounds what a connection buffers."""
    max_connections: Positive = 1024
    """Connections served at once; more wait in the kernel's backlog until one closes. Kept below the open
file limit (the soft limit is raised to the hard one at start) with room for the collector's other files."""
    max_connections_per_uid: Positive = 256
    """Connections one local uid may hold at once; more are refused at once (the client uses its outbox),
so one user's idle connections cannot take every slot from the others."""
    idle_seconds: Seconds = 300.0
    """A connection that sends nothing (or stalls mid-frame, or reads no replies) this long is closed."""


class SpoolSection(_Section):
    fsync: Literal["always", "interval", "never"] = "interval"
    """When spooled events are forced to disk: before each ack (group commit), on a timer, or never."""
    fsync_interval_seconds: Seconds = 0.1
    """The timer of ``fsync = "interval"``."""
    max_bytes: Positive = 1 << 30
    """When the spool holds this much, clients are not read until deliveries free space (backpressure)."""
    segment_bytes: Positive = 64 << 20
    """Size at which a spool segment is sealed and a new one started; delivered segments are deleted."""


class BreakerSection(_Section):
    failures: Positive = 5
    """Consecutive failed writes that open the breaker."""
    open_seconds: Seconds = 2.0
    """How long the breaker first stays open before one probe write is tried: short, so that a database
restart of a few seconds pauses delivery for seconds, not minutes."""
    backoff: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    """Factor by which the open period grows after each failed probe (1 keeps it constant); a probe that
succeeds starts again from ``open_seconds``..."""
    max_open_seconds: Seconds = 300.0
    """...up to this, so a long outage is probed only this often."""
    jitter: Fraction = 0.1
    """Random spread of the open period (±), so a fleet of collectors does not probe in step."""
    probe_timeout_seconds: Seconds = 30.0
    """A probe write that takes longer counts as failed."""
    retry_seconds: Seconds = 1.0
    """Pause between retries of a failed write while the breaker is still closed."""


class OutboxSection(_Section):
    dir: str = ""
    """Client outbox directory to drain; empty means ``$HOOKDB_OUTBOX`` or ``outbox/`` beside the socket."""
    scan_seconds: Seconds = 2.0
    """How often the outbox is checked for files to drain."""


class DatabaseSection(_Section):
    dsn: str = ""
    """PostgreSQL DSN (also ``$HOOKDB_DSN``); empty starts the embedded server under the state directory."""
    connect_timeout_seconds: Seconds = 10.0
    """How long a connection attempt may take."""
    write_timeout_seconds: Seconds = 60.0
    """A batch write (its statements and commit) that takes longer counts as failed."""
    statement_timeout_seconds: Seconds = 30.0
    """PostgreSQL's ``statement_timeout`` for the collector's transactions (set in each one)."""
    pooler: Literal["none", "transaction"] = "none"
    """What sits between hookdb and the server: "none" (the server itself, or a pooler in session mode), or
"transaction" for a transaction-mode pooler such as pgbouncer's default: then nothing but
``application_name`` is sent at startup (the pooler refuses the rest; the server's TCP keepalives are the
pooler's to set) and asyncpg keeps no prepared statements. Every role, tenant and timeout is set per
transaction either way. Applies to the collector, ``hookdb api``, backfill and the admin commands."""
    health_check_seconds: Seconds = 5.0
    """When no batch was written for this long, a ``SELECT 1`` checks that the database is still there."""
    password_file: str = ""
    """A file holding the password, re-read at every (re)connect so a rotated credential needs no restart."""
    role: str = "hookdb_writer"
    """Role the collector writes as (``SET ROLE``), so row-level security applies; empty keeps the login's."""
    blob_min_bytes: Positive = 8192
    """Payload strings this long or longer are stored once per tenant by content (``payload_blobs``)."""
    writers: Annotated[int, msgspec.Meta(ge=1, le=16)] | Literal["auto"] = "auto"
    """Connections each delivery process writes batches on at once, so PostgreSQL works on one while the
collector readies the next; the spool checkpoint moves only over batches committed without a gap. 1 writes
strictly in order. "auto" is 1 where 2 or more delivery processes already write at once, else 2: more
transactions at once than cores cost PostgreSQL CPU in contention (measured on 2 cores with 2 processes:
11.6 µs an event on one connection each, 14.4 on two, 5% more events a second)."""
    delivery_processes: Annotated[int, msgspec.Meta(ge=1, le=16)] | Literal["auto"] = "auto"
    """Processes that deliver batches, each on ``writers`` connections of its own. Delivery (decoding,
projections, the writes) is most of the collector's CPU per event: with 2 or more it uses as many cores,
while the collector's own process keeps intake, the spool and its checkpoint. 1 delivers in the collector's
own process; "auto" is one per core the collector may run on, up to 4."""
    delivery_hung_seconds: Seconds = 30.0
    """A delivery process that has not reported for this long (it reports twice a second, busy or not) is
taken as hung: killed, and its batches given to the process started in its place."""

    @property
    def writer_connections(self) -> int:
        """How many connections ``writers`` means for each delivery process."""
        if self.writers != "auto":
            return self.writers
        return 1 if self.processes >= 2 else 2

    @property
    def processes(self) -> int:
        """How many delivery processes ``delivery_processes`` means on this machine."""
        if self.delivery_processes != "auto":
            return self.delivery_processes
        return min(len(os.sched_getaffinity(0)), MAX_AUTO_PROCESSES)


class BatchSection(_Section):
    max_events: Positive = 2000
    """A batch is written once it holds this many events..."""
    max_bytes: Positive = 16 * 1024 * 1024
    """...or this many payload bytes..."""
    linger_seconds: Seconds = 0.2
    """...or its first event has waited this long."""


class SearchSection(_Section):
    defer_backlog_events: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    """While the spool holds more undelivered events than this, a batch's search documents are deferred:
its searchable events are queued and indexed by a writer with no batch waiting, so a burst is stored sooner
and found by search a little later (``/api/sessions?q=`` says how many are pending). 0: never deferred."""
    defer_max_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """While delivery stays behind, deferred documents still come within about this long: each batch is then
preceded by one backlog row queued longer ago than this, so a sustained load delays search by a bound, not
until it ends. 0: made only once delivery has caught up."""


class MetricsSection(_Section):
    enabled: bool = True
    """Serve ``/metrics``, ``/healthz``, ``/readyz`` and ``/health/db`` over HTTP."""
    listen: str = "127.0.0.1:9464"
    """``HOST:PORT`` of that HTTP endpoint."""
    max_connections: Positive = 64
    """Connections served at once; more wait in the kernel's backlog (costing no file descriptor)."""
    header_timeout_seconds: Seconds = 10.0
    """A connection is closed if a request's headers are not in this long after it opened or answered."""


class HttpHooksSection(_Section):
    enabled: bool = False
    """Accept Claude Code's HTTP hooks (``POST /v1/hooks/<source>``) besides the Unix socket."""
    listen: str = "127.0.0.1:9465"
    """``HOST:PORT`` to accept them on; keep it on loopback."""
    tokens: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Tenant → digests of its bearer tokens (``hookdb hash-token`` prints the digest of a token)."""
    transcript_owners: dict[str, str] = msgspec.field(default_factory=dict)
    """Tenant → the local user (name or uid) whose transcripts its HTTP hooks name: a transcript that user
owns is read for the session's usage and cost, as a socket event's is when its sender owns it. HTTP tells
no sender, so without an entry the transcripts of a tenant's HTTP hooks are not read."""
    max_connections: Positive = 256
    """Connections served at once; more wait in the kernel's backlog (costing no file descriptor)."""
    header_timeout_seconds: Seconds = 10.0
    """A connection is closed if a request's headers are not in this long after it opened or answered."""
    body_timeout_seconds: Seconds = 10.0
    """A request body not received in full within this time is answered 408 and its connection closed."""
    max_body_bytes: Positive = 4 * DEFAULT_MAX_FRAME_BYTES
    """Largest hook body read (only after the token is checked); a body over ``listener.max_frame_bytes``
is stored with its largest strings replaced by markers of their size and sha256, one over this gets 413."""


class ApiSection(_Section):
    listen: str = "127.0.0.1:9466"
    """``HOST:PORT`` the read API and web page (``hookdb api``) listen on."""
    tokens: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Tenant → digests of the bearer tokens that read its sessions (``hookdb hash-token``)."""
    role: str = "hookdb_reader"
    """Role the API reads as (``SET ROLE``), so row-level security applies; empty keeps the login's."""
    pool_size: Annotated[int, msgspec.Meta(ge=4)] = 8
    """Database connections the API keeps at most (at least 4: a session detail reads four at once)."""
    statement_timeout_seconds: Seconds = 10.0
    """PostgreSQL's ``statement_timeout`` for the API's queries."""
    listen_dsn: str = ""
    """DSN of the one connection the live feed LISTENs on, which needs a session of its own: set it to reach
the server directly when the API's DSN goes through a transaction-mode pooler (the pooler would hand the
LISTEN's server connection to other clients). The password file applies to it too. Empty: the API's DSN."""
    retry_after_seconds: Positive = 5
    """``Retry-After`` of the 503 answered while the database is unreachable."""
    heartbeat_seconds: Seconds = 15.0
    """A live stream with nothing to say sends a comment this often, so proxies keep it open."""


class TenantsSection(_Section):
    default: str = "default"
    """Tenant of a local peer that no mapping below names; empty refuses such peers."""
    uids: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """User (id or name) → tenants it may write; the first is used when a frame names none."""
    gids: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Group (id or name) → tenants its members may write (the peer's primary group)."""


class RetentionSection(_Section):
    live_months: Positive = 6
    """Full months kept in the live table besides the current one; older months are archived and dropped."""
    purge_months: Annotated[int, msgspec.Meta(ge=0)] = 24
    """Full months kept at all (live or archived) besides the current one; 0 keeps archive files forever."""
    ahead_months: Annotated[int, msgspec.Meta(ge=0)] = 3
    """Months created ahead of the current one, so events land in their month's partition, not the default."""
    archive_dir: str = ""
    """Where archived months are written as gzipped CSV; empty means ``archive/`` in the state directory."""
    upload_command: list[str] = msgspec.field(default_factory=list)
    """Run (without a shell) on each archive file before its month is dropped from the database, e.g.
["aws", "s3", "cp", "{path}", "s3://bucket/hookdb/"]; {path}, {name} and {month} are filled in. Until it
succeeds the month stays in the database, detached, and the next run tries again. Empty: no upload."""

    def __post_init__(self) -> None:
        if self.purge_months and self.purge_months < self.live_months:
            raise ValueError(
                f"purge_months ({self.purge_months}) must be 0 or at least live_months ({self.live_months})"
            )


class OtlpSection(_Section):
    enabled: bool = False
    """Accept Claude Code's OpenTelemetry logs and metrics (OTLP/HTTP ``POST /v1/logs``, ``/v1/metrics``),
with the bearer tokens of ``[http_hooks.tokens]``."""
    listen: str = "127.0.0.1:4318"
    """``HOST:PORT`` to accept them on (4318 is the OTLP/HTTP port); keep it on loopback."""
    max_body_bytes: Positive = 16 * 1024 * 1024
    """Largest export request taken, after gzip is undone; a bigger one is answered 413."""
    max_connections: Positive = 64
    """Connections served at once; more wait in the kernel's backlog (costing no file descriptor)."""
    header_timeout_seconds: Seconds = 10.0
    """A connection is closed if a request's headers are not in this long after it opened or answered."""
    body_timeout_seconds: Seconds = 10.0
    """A request body not received in full within this time is answered 408 and its connection closed."""


class PricesSection(_Section):
    overrides: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Model → USD per million tokens (``input``, ``output``, ``cache_read``, ``cache_write_5m``,
``cache_write_1h``, and an optional ``long_context`` table with ``above``), replacing the built-in price of
that model for costs the collector computes; a model the built-in table lacks needs all five rates."""

    def __post_init__(self) -> None:
        from hookdb.collector import prices  # here, so reading a config needs no price table otherwise

        try:
            prices.table(self.overrides)
        except prices.PriceError as exc:
            raise ValueError(str(exc)) from None


class Config(_Section):
    collector: CollectorSection = msgspec.field(default_factory=CollectorSection)
    listener: ListenerSection = msgspec.field(default_factory=ListenerSection)
    database: DatabaseSection = msgspec.field(default_factory=DatabaseSection)
    batch: BatchSection = msgspec.field(default_factory=BatchSection)
    spool: SpoolSection = msgspec.field(default_factory=SpoolSection)
    breaker: BreakerSection = msgspec.field(default_factory=BreakerSection)
    search: SearchSection = msgspec.field(default_factory=SearchSection)
    outbox: OutboxSection = msgspec.field(default_factory=OutboxSection)
    metrics: MetricsSection = msgspec.field(default_factory=MetricsSection)
    http_hooks: HttpHooksSection = msgspec.field(default_factory=HttpHooksSection)
    otlp: OtlpSection = msgspec.field(default_factory=OtlpSection)
    prices: PricesSection = msgspec.field(default_factory=PricesSection)
    tenants: TenantsSection = msgspec.field(default_factory=TenantsSection)
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    retention: RetentionSection = msgspec.field(default_factory=RetentionSection)

    @property
    def socket_path(self) -> str:
        return self.listener.socket or default_socket_path()

    @property
    def state_dir(self) -> Path:
        return Path(self.collector.state_dir or os.environ.get(STATE_DIR_ENV) or _default_state_dir())

    @property
    def outbox_dir(self) -> Path:
        return Path(self.outbox.dir or outbox_dir(self.socket_path))

    @property
    def archive_dir(self) -> Path:
        return Path(self.retention.archive_dir) if self.retention.archive_dir else self.state_dir / "archive"

    @property
    def dsn(self) -> str | None:
        return self.database.dsn or os.environ.get(DSN_ENV) or None


class ConfigError(ValueError):
    """A setting that is unknown, malformed or of the wrong type; the message names it."""


def _default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/hookdb"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "hookdb")


def add_options(parser: argparse.ArgumentParser, *, state_dir: bool = True) -> None:
    """The command-line options every ``hookdb`` command that reads the config takes."""
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one setting (repeatable), e.g. --set batch.max_events=500",
    )
    if state_dir:
        parser.add_argument(
            "--state-dir", metavar="DIR", help="the collector's state directory (collector.state_dir)"
        )


def load(path: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """Build the configuration from an optional TOML file and ``section.key=value`` overrides.

    Every problem is reported at once, one line each, naming the setting and where it came from
    (``FILE:LINE`` or the ``--set`` that gave it), with the valid values or the likely intended name.
    """
    raw: dict[str, Any] = {}
    text = ""
    if path is not None:
        try:
            with open(path, "rb") as f:
                text = f.read().decode()
            raw = tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    given: dict[str, str] = {}
    for item in overrides:
        name, eq, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not (eq and dot and section and key):
            raise ConfigError(f"--set takes section.key=value, got {item!r}")
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"--set {item}: {section} is not a section")
        raw[section][key] = _scalar(value.strip())
        given[f"{section}.{key}"] = item
    problems = [_where(name, problem, path, text, given) for name, problem in _problems(raw)]
    if problems:
        raise ConfigError("\n".join(problems))
    return msgspec.convert(raw, Config, strict=False)


_AT = " - at `$"


def _problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    """Every unknown name and bad value of ``raw``, as (``section.key``, problem); checked key by key, so
    one mistake does not hide the next."""
    sections = {field.name: field.type for field in msgspec.structs.fields(Config)}
    found: list[tuple[str, str]] = []
    for section, values in raw.items():
        kind = sections.get(section)
        if kind is None:
            found.append((section, "unknown section" + _suggestion(section, sections)))
            continue
        if not isinstance(values, dict):
            found.append((section, "expected a table of settings"))
            continue
        fields = {field.name: field.type for field in msgspec.structs.fields(kind)}
        before = len(found)
        for key, value in values.items():
            if key not in fields:
                found.append((f"{section}.{key}", "unknown setting" + _suggestion(key, fields)))
                continue
            try:
                msgspec.convert({key: value}, kind, strict=False)
            except msgspec.ValidationError as exc:
                found.append(_located(f"{section}", str(exc), fields[key]))
        if len(found) == before:  # each value is fine alone; now how they go together
            try:
                msgspec.convert(values, kind, strict=False)
            except msgspec.ValidationError as exc:
                found.append(_located(section, str(exc), None))
    return found


def _located(section: str, message: str, kind: Any) -> tuple[str, str]:
    """msgspec's ``problem - at `$.key…``` as (``section.key…``, problem), listing an enum's values."""
    problem, _, where = message.partition(_AT)
    name = f"{section}{where.rstrip('`')}" if where else section
    if get_origin(kind) is Literal:
        problem += f" (valid: {', '.join(map(str, get_args(kind)))})"
    return name, problem


def _suggestion(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _where(name: str, problem: str, path: str | None, text: str, given: dict[str, str]) -> str:
    """``FILE:LINE: section.key: problem``, or ``--set …: section.key: problem``."""
    source = next((item for key, item in given.items() if key == name or key.startswith(name + ".")), None)
    if source is None:
        source = next((item for key, item in given.items() if name.startswith(key)), None)
    if source is not None:
        return f"--set {source}: {name}: {problem}"
    line = _line_of(text, name)
    origin = f"{path}:{line}" if path and line else (path or "settings")
    return f"{origin}: {name}: {problem}"


def _line_of(text: str, name: str) -> int | None:
    """The line of ``section.key…`` (or ``[section]``) in a TOML text: a plain scan, enough for our files."""
    section, _, rest = name.partition(".")
    key = rest.split(".")[0].split("[")[0]
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped.strip("[] ")
            if (current == section and not key) or (key and current == f"{section}.{key}"):
                return number
        elif current == section and key and stripped.split("=", 1)[0].strip().strip('"') == key:
            return number
    return None


def _scalar(text: str) -> Any:
    """A ``--set`` value as TOML reads it (``5``, ``0.5``, ``true``, ``"x"``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
