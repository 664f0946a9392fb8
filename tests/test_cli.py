"""The ``hookdb`` command as a newcomer meets it: versions, help on every command, every config problem at
once, friendly empty answers, and an install that prints no warnings."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hookdb.collector import cli

from conftest import BIN, run_sql

ROOT = Path(__file__).resolve().parent.parent


def hookdb(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hookdb"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser, e.g. ``("spool", "inspect")``."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*path, name))
                found += subcommands(sub, (*path, name))
    return found


def test_version() -> None:
    result = hookdb("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("hookdb ")
    assert result.stdout.split()[1][0].isdigit()


@pytest.mark.parametrize("path", subcommands(cli.build_parser()), ids=" ".join)
def test_every_command_has_help_with_a_description(path: tuple[str, ...]) -> None:
    result = hookdb(*path, "--help")
    assert result.returncode == 0, result.stderr
    usage, _, rest = result.stdout.partition("\n\n")
    assert usage.startswith("usage: hookdb")
    description = rest.strip().splitlines()[0]
    assert description, result.stdout
    assert not description.startswith(("positional", "options")), result.stdout


def test_check_config_lists_every_problem_with_suggestions(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(
        '[spool]\nfsycn = "always"\nfsync = "sometimes"\n\n[listner]\nsocket = "/tmp/x"\n\n'
        "[batch]\nmax_events = -1\n"
    )
    result = hookdb("check-config", str(path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines == [
        f"hookdb: {path}:2: spool.fsycn: unknown setting (did you mean fsync?)",
        f"hookdb: {path}:3: spool.fsync: Invalid enum value 'sometimes' (valid: always, interval, never)",
        f"hookdb: {path}:5: listner: unknown section (did you mean listener?)",
        f"hookdb: {path}:9: batch.max_events: Expected `int` >= 1",
    ], result.stderr


def test_check_config_names_the_override_at_fault() -> None:
    result = hookdb("check-config", "--set", "spool.fsync=maybe", "--set", "batch.linger_seconds=x")
    assert result.returncode == 1
    assert "hookdb: --set spool.fsync=maybe: spool.fsync: Invalid enum value 'maybe'" in result.stderr
    assert "--set batch.linger_seconds=x: batch.linger_seconds: Expected `float`" in result.stderr


def test_an_empty_dead_letter_list_says_so(tmp_path: Path) -> None:
    result = hookdb("deadletter", "list", "--state-dir", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.startswith("no dead letters")
    assert hookdb("deadletter", "list", "--json", "--state-dir", str(tmp_path)).stdout == ""


def test_building_the_package_prints_no_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # pip's own notes about this machine's package indexes are not ours; the build's warnings are.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "Location 'file:" not in line]
    assert not [line for line in ours if "warn" in line.lower()], "\n".join(ours)


def test_the_readme_config_blocks_are_valid_settings(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 3
    for number, block in enumerate(blocks):
        path = tmp_path / f"block{number}.toml"
        path.write_text(block.replace("sha256:…", "sha256:" + "0" * 64))
        result = hookdb("check-config", str(path))
        assert result.returncode == 0, block + result.stderr


def test_hookdb_emit_answers_help_and_version_without_reading_stdin() -> None:
    for flag in ("--help", "-h"):
        # stdin stays open and empty: a run that read it would never end.
        helped = subprocess.Popen(
            [str(BIN / "hookdb-emit"), flag], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            helped.wait(timeout=10)
        finally:
            helped.kill()
            assert helped.stdin is not None
            helped.stdin.close()
        out = helped.stdout.read() if helped.stdout else ""
        assert helped.returncode == 0
        assert out.startswith("usage: hookdb-emit")
        assert "--timeout SECONDS" in out
    versioned = subprocess.run(
        [str(BIN / "hookdb-emit"), "--version"],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.PIPE,
    )
    assert versioned.stdout.startswith("hookdb-emit ")
    assert versioned.stdout.strip().split()[1] == hookdb("--version").stdout.split()[1]


def test_migrate_and_backfill_use_the_embedded_server_by_default() -> None:
    """Like ``collector run``, ``api`` and ``partitions``: no DSN means the state directory's own server."""
    from hookdb.collector.store import embedded

    state = Path(tempfile.mkdtemp(prefix="hookdb-test-embedded-"))  # not under pytest's 0700 tmp
    env = {k: v for k, v in os.environ.items() if k not in ("HOOKDB_DSN", "HOOKDB_SOCKET", "HOOKDB_CONFIG")}
    try:
        migrated = hookdb("migrate", "--state-dir", str(state), env=env)
        assert migrated.returncode == 0, migrated.stderr
        transcripts = Path(__file__).parent / "fixtures" / "transcript"
        filled = hookdb("backfill", "claude-code", str(transcripts), "--state-dir", str(state), env=env)
        assert filled.returncode == 0, filled.stderr
        server, dsn = embedded.start(state)
        try:
            assert run_sql(dsn, "SELECT count(*) FROM hook_audit_log WHERE source = 'backfill'")[0][0] > 0
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(state, ignore_errors=True)
