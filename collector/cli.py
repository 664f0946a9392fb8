"""``hookdb``: the collector daemon and its admin commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hookdb.collector import config as config_mod
from hookdb.collector.admin import backfill_cli, install_hooks
from hookdb.collector.admin.usage import command
from hookdb.collector.ops import logs

if TYPE_CHECKING:
    from hookdb.collector.admin.spool_report import SpoolReport
    from hookdb.collector.store.connect import ConnectOptions

T = TypeVar("T")


def _dsn_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", help="PostgreSQL DSN (database.dsn, $HOOKDB_DSN); default: the embedded server"
    )


def _socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", metavar="PATH", help="the collector's Unix socket (listener.socket)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookdb",
        description=__doc__,
        epilog="Run 'hookdb COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('hookdb')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    collector = command(commands, "collector", "the collector daemon", "hookdb collector run")
    collector_actions = collector.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = command(
        collector_actions,
        "run",
        "run the collector in the foreground until SIGTERM or SIGINT",
        "hookdb collector run",
        "hookdb collector run --dsn postgresql://hookdb@db/hookdb --config /etc/hookdb/collector.toml",
    )
    _socket_option(run)
    _dsn_option(run)
    config_mod.add_options(run)

    spool = command(commands, "spool", "look into the collector's spool (read-only)", "hookdb spool inspect")
    spool_actions = spool.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect = command(
        spool_actions,
        "inspect",
        "records, bytes, oldest age and damage, per segment",
        "hookdb spool inspect --state-dir /var/lib/hookdb",
        "hookdb spool inspect --json",
    )
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    config_mod.add_options(inspect)
    verify = command(
        spool_actions,
        "verify",
        "check every record's CRC; exit 1 if any segment is damaged",
        "hookdb spool verify --state-dir /var/lib/hookdb",
    )
    config_mod.add_options(verify)

    command(
        commands,
        "hash-token",
        "print the digest of a bearer token read from stdin, for the config",
        'printf %s "$TOKEN" | hookdb hash-token',
    )

    migrate = command(
        commands,
        "migrate",
        "apply pending schema migrations to the database",
        "hookdb migrate --dsn postgresql://hookdb@db/hookdb",
    )
    _dsn_option(migrate)
    config_mod.add_options(migrate)

    partitions = command(
        commands,
        "partitions",
        "monthly partitions of hook_audit_log",
        "hookdb partitions maintain --dry-run",
    )
    partitions_actions = partitions.add_subparsers(dest="action", required=True, metavar="ACTION")
    maintain = command(
        partitions_actions,
        "maintain",
        "create months ahead, archive months past the live window to files, purge old archives",
        "hookdb partitions maintain --dsn postgresql://hookdb@db/hookdb",
        "hookdb partitions maintain --now 2027-06-01 --dry-run",
    )
    _dsn_option(maintain)
    maintain.add_argument(
        "--now", type=_date, metavar="YYYY-MM-DD", help="act as on this day (UTC) instead of today"
    )
    maintain.add_argument(
        "--dry-run",
        action="store_true",
        help="print what it would create, archive (with row counts), drop and purge; change nothing",
    )
    config_mod.add_options(maintain)

    search = command(commands, "search", "full-text search documents", "hookdb search backfill --dry-run")
    search_actions = search.add_subparsers(dest="action", required=True, metavar="ACTION")
    search_backfill = command(
        search_actions,
        "backfill",
        "make the search documents of the events stored before migration 0007",
        "hookdb search backfill --dsn postgresql://hookdb@db/hookdb",
        "hookdb search backfill --tenant research --dry-run",
    )
    _dsn_option(search_backfill)
    search_backfill.add_argument("--tenant", help="only this tenant's events (default: every tenant's)")
    search_backfill.add_argument(
        "--dry-run", action="store_true", help="read and count what a run would write; write nothing"
    )
    config_mod.add_options(search_backfill)

    check = command(
        commands,
        "check-config",
        "validate a configuration file; exit 1 listing every problem",
        "hookdb check-config /etc/hookdb/collector.toml",
        "hookdb check-config --set spool.fsync=always",
    )
    check.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help=f"default: ${config_mod.CONFIG_ENV} or {config_mod.DEFAULT_PATH}",
    )
    check.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides")

    dead = command(commands, "deadletter", "events PostgreSQL refused as data", "hookdb deadletter list")
    dead_actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(
        dead_actions,
        "list",
        "show the dead letters",
        "hookdb deadletter list",
        "hookdb deadletter list --json",
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON object per line, with the original bytes"
    )
    config_mod.add_options(listing)
    replay = command(
        dead_actions,
        "replay",
        "send the dead letters to the running collector again",
        "hookdb deadletter replay --state-dir /var/lib/hookdb",
    )
    _socket_option(replay)
    config_mod.add_options(replay)
    api = command(
        commands,
        "api",
        "serve the read API and the session history web page",
        "hookdb api --config /etc/hookdb/collector.toml --listen 127.0.0.1:9466",
    )
    _dsn_option(api)
    api.add_argument(
        "--listen", metavar="HOST:PORT", help="where to listen (api.listen, default 127.0.0.1:9466)"
    )
    config_mod.add_options(api)
    install_hooks.add_command(commands)
    backfill_cli.add_commands(commands)
    return parser


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def config_path(args: argparse.Namespace) -> str | None:
    """``--config`` (or check-config's PATH), else ``$HOOKDB_CONFIG``, else the default file if it exists."""
    explicit = (
        getattr(args, "config", None) or getattr(args, "path", None) or os.environ.get(config_mod.CONFIG_ENV)
    )
    if explicit:
        return explicit
    return config_mod.DEFAULT_PATH if os.path.exists(config_mod.DEFAULT_PATH) else None


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The configuration the command line asks for; dedicated flags win over ``--set`` and the file."""
    overrides = list(getattr(args, "overrides", ()))
    for flag, name in (
        ("state_dir", "collector.state_dir"),
        ("socket", "listener.socket"),
        ("dsn", "database.dsn"),
        ("listen", "api.listen"),
    ):
        value = getattr(args, flag, None)
        if value:
            overrides.append(f"{name}={_toml_string(value)}")
    return config_mod.load(config_path(args), overrides)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        config = load_config(args)
    except config_mod.ConfigError as exc:
        for problem in str(exc).splitlines():
            print(f"hookdb: {problem}", file=sys.stderr)
        return 1 if args.command == "check-config" else 2
    command = {
        ("check-config", None): _check_config,
        ("migrate", None): _migrate,
        ("hash-token", None): _hash_token,
        ("install-hooks", None): lambda config, args: install_hooks.run(args),
        ("backfill", "claude-code"): lambda config, args: backfill_cli.run(args, config),
        ("backfill", "sessions"): lambda config, args: backfill_cli.run(args, config),
        ("partitions", "maintain"): _partitions_maintain,
        ("search", "backfill"): _search_backfill,
        ("collector", "run"): _run_collector,
        ("api", None): _run_api,
        ("spool", "inspect"): _spool_inspect,
        ("spool", "verify"): _spool_verify,
        ("deadletter", "list"): _deadletter_list,
        ("deadletter", "replay"): _deadletter_replay,
    }[(args.command, getattr(args, "action", None))]
    return command(config, args)


def _hash_token(config: config_mod.Config, args: argparse.Namespace) -> int:
    from hookdb.collector.intake.tenancy import token_digest

    token = sys.stdin.readline().strip()
    if not token:
        print('hookdb: give the token on stdin, e.g. printf %s "$TOKEN" | hookdb hash-token', file=sys.stderr)
        return 2
    print(token_digest(token))
    return 0


def _migrate(config: config_mod.Config, args: argparse.Namespace) -> int:
    import asyncpg

    from hookdb.collector.store import embedded
    from hookdb.collector.store.migrate import SchemaError, migrate

    async def run(dsn: str) -> list[str]:
        conn = await _admin_options(config, dsn).connect()
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        applied = _on_database(config, run)
    except (embedded.EmbeddedUnavailable, SchemaError, OSError, asyncpg.PostgresError) as exc:
        print(f"hookdb: {exc}", file=sys.stderr)
        return 1
    print(f"applied {', '.join(applied)}" if applied else "the schema is up to date")
    return 0


def _on_database(config: config_mod.Config, work: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """``work(dsn)`` on the configured database, or on the embedded server, started for it and stopped
    after (errors are the caller's to report)."""
    import asyncio

    from hookdb.collector.store import embedded

    server = None
    try:
        dsn = config.dsn
        if dsn is None:
            server, dsn = embedded.start(config.state_dir)
        return asyncio.run(work(dsn))
    finally:
        if server is not None:
            server.cleanup()


def _admin_options(config: config_mod.Config, dsn: str) -> ConnectOptions:
    """Admin commands act as the login itself, and exporting a month may take minutes (lock waits are
    bounded by ``lock_timeout`` instead)."""
    from hookdb.collector.store.connect import ConnectOptions

    return ConnectOptions.from_config(
        config, dsn, application_name="hookdb-admin", role="", statement_timeout=0
    )


def _partitions_maintain(config: config_mod.Config, args: argparse.Namespace) -> int:
    import asyncpg

    from hookdb.collector.store import embedded, retention
    from hookdb.collector.store.migrate import SchemaError, migrate, migrations

    policy = retention.Policy.from_config(config)
    now = args.now or datetime.now(UTC)

    async def run(dsn: str) -> retention.Report:
        conn = await _admin_options(config, dsn).connect()
        try:
            if args.dry_run:
                # A preview applies no migration either: it plans on the schema as it is, when it is current.
                done = set()
                if await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None:
                    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                pending = [m.name for m in migrations() if m.version not in done]
                if pending:
                    raise SchemaError(
                        f"the schema lacks migrations {', '.join(pending)}, which a run would apply first; "
                        "run `hookdb migrate`, then preview again"
                    )
                return await retention.preview(conn, policy, now)
            applied = await migrate(conn)
            if applied:
                logs.get("hookdb.retention").info("schema.migrated", migrations=applied)
            return await retention.maintain(conn, policy, now)
        finally:
            await conn.close()

    try:
        report = _on_database(config, run)
    except (
        embedded.EmbeddedUnavailable,
        SchemaError,
        retention.RetentionError,
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        logs.get("hookdb.retention").error("retention.aborted", error=str(exc), error_type=type(exc).__name__)
        print(f"hookdb: partitions maintain: {exc}", file=sys.stderr)
        return 1
    print(report.render())
    if not report.ok:
        print(f"hookdb: partitions maintain: {len(report.failed)} steps failed", file=sys.stderr)
        return 1
    return 0


def _search_backfill(config: config_mod.Config, args: argparse.Namespace) -> int:
    import asyncpg

    from hookdb.collector.admin import search_backfill
    from hookdb.collector.store import embedded
    from hookdb.collector.store.migrate import SchemaError

    def run(dsn: str) -> Coroutine[Any, Any, search_backfill.Summary]:
        return search_backfill.run(_admin_options(config, dsn), args.tenant, dry_run=args.dry_run)

    try:
        summary = _on_database(config, run)
    except (
        embedded.EmbeddedUnavailable,
        SchemaError,
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        logs.get("hookdb.search_backfill").error("search_backfill.failed", error=str(exc))
        print(f"hookdb: search backfill: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hookdb: search backfill: interrupted (running it again is safe)", file=sys.stderr)
        return 130
    print(summary.render())
    return 0


def _check_config(config: config_mod.Config, args: argparse.Namespace) -> int:
    print(f"{config_path(args) or 'defaults'}: ok")
    return 0


def _run_api(config: config_mod.Config, args: argparse.Namespace) -> int:
    import trio

    from hookdb.collector.api import server
    from hookdb.collector.store.embedded import EmbeddedUnavailable

    try:
        trio.run(server.run, config)
    except (EmbeddedUnavailable, OSError) as exc:
        print(f"hookdb: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_collector(config: config_mod.Config, args: argparse.Namespace) -> int:
    import trio

    from hookdb.collector import daemon
    from hookdb.collector.intake.listener import SocketInUse
    from hookdb.collector.store.embedded import EmbeddedUnavailable
    from hookdb.collector.store.migrate import SchemaError

    try:
        trio.run(daemon.run, config)
    except BaseException as exc:
        cause = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]  # trio and trio-asyncio may wrap what they raise in a group
        if isinstance(cause, config_mod.ConfigError):
            print(f"hookdb: {cause}", file=sys.stderr)
            return 2
        if isinstance(
            cause, daemon.StateDirLocked | SocketInUse | EmbeddedUnavailable | SchemaError | OSError
        ):
            logs.get("hookdb.collector").error("collector.failed", error=str(cause))
            print(f"hookdb: {cause}", file=sys.stderr)
            return 1
        raise
    return 0


def _spool_report(config: config_mod.Config) -> SpoolReport:
    from hookdb.collector.admin.spool_report import inspect
    from hookdb.collector.daemon import SPOOL_RECORD_OVERHEAD

    return inspect(config.state_dir / "spool", config.listener.max_frame_bytes + SPOOL_RECORD_OVERHEAD)


def _spool_inspect(config: config_mod.Config, args: argparse.Namespace) -> int:
    from hookdb.collector.admin.spool_report import render

    report = _spool_report(config)
    print(msgspec.json.encode(report).decode() if args.json else render(report))
    return 0


def _spool_verify(config: config_mod.Config, args: argparse.Namespace) -> int:
    from hookdb.collector.admin.spool_report import render

    report = _spool_report(config)
    print(render(report))
    if report.damaged:
        print("hookdb: the spool has damaged segments; the collector quarantines them at its next start")
        return 1
    return 0


def _deadletter_list(config: config_mod.Config, args: argparse.Namespace) -> int:
    from hookdb.collector.spool import deadletters

    shown = 0
    for path in deadletters.pending_files(config.state_dir):
        for letter in deadletters.read(path):
            shown += 1
            if isinstance(letter, str):
                print(letter, file=sys.stderr)
            elif args.json:
                print(msgspec.json.encode(letter).decode())
            else:
                print(
                    f"{letter.dead_at:%Y-%m-%d %H:%M:%S} {letter.event_id} {letter.event_type} "
                    f"[{letter.sqlstate or '-'}] {letter.error}"
                )
    if not shown and not args.json:
        print(f"no dead letters in {deadletters.directory(config.state_dir)}")
    return 0


def _deadletter_replay(config: config_mod.Config, args: argparse.Namespace) -> int:
    from hookdb.collector.spool import deadletters

    sent, problems = deadletters.replay(config.state_dir, config.socket_path)
    for problem in problems:
        print(f"hookdb: {problem}", file=sys.stderr)
    print(f"replayed {sent} dead letters; {len(problems)} not taken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
