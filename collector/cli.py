"""``hookdb``: the collector daemon and its admin commands."""

from __future__ import annotations

import argparse
import sys

from hookdb.collector import config as config_mod
from hookdb.collector import logs


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one setting (repeatable), e.g. --set batch.max_events=500",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="state directory (collector.state_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookdb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    collector = commands.add_parser("collector", help="the collector daemon")
    collector_commands = collector.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = collector_commands.add_parser("run", help="run the collector in the foreground")
    run.add_argument("--socket", metavar="PATH", help="Unix socket to listen on (listener.socket)")
    run.add_argument("--dsn", help="PostgreSQL DSN (database.dsn, $HOOKDB_DSN); default: embedded server")
    _config_options(run)
    return parser


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """The configuration the command line asks for; dedicated flags win over ``--set`` and the file."""
    overrides = list(args.overrides)
    for flag, name in (
        ("state_dir", "collector.state_dir"),
        ("socket", "listener.socket"),
        ("dsn", "database.dsn"),
    ):
        value = getattr(args, flag, None)
        if value:
            overrides.append(f"{name}={_toml_string(value)}")
    return config_mod.load(args.config, overrides)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure()
    try:
        config = load_config(args)
    except config_mod.ConfigError as exc:
        print(f"hookdb: {exc}", file=sys.stderr)
        return 2
    if args.command == "collector" and args.action == "run":
        return _run_collector(config)
    return 2


def _run_collector(config: config_mod.Config) -> int:
    import trio

    from hookdb.collector import daemon
    from hookdb.collector.embedded import EmbeddedUnavailable
    from hookdb.collector.listener import SocketInUse

    try:
        trio.run(daemon.run, config)
    except (SocketInUse, EmbeddedUnavailable) as exc:
        logs.get("hookdb.collector").error("collector.failed", error=str(exc))
        print(f"hookdb: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
