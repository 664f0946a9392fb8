"""``hookdb install-hooks``, run as a process on real settings files in temporary directories."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hookdb.collector import classification as cls
from hookdb.collector.admin import install_hooks as cs

from fixtures import corpus

# A hand-written file: 4-space indent, one-line arrays, \u escapes, no final newline. Re-serializing it
# would change its bytes, so getting it back byte for byte proves uninstall restores the original.
USER_SETTINGS = """{
    "model": "claude-opus-4-1",
    "permissions": {"allow": ["Bash(npm run test:*)", "Read(~/.zshrc)"], "deny": ["Read(./.env)"]},
    "env": {"GREETING": "gr\\u00fc\\u00df dich", "CLAUDE_CODE_ENABLE_TELEMETRY": "1"},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/check.sh", "timeout": 10}]},
            {"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "npx prettier --write"}]}
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "say done"}]}],
        "SessionStart": [{"matcher": "startup", "hooks": [{"type": "command", "command": "cat NOTES.md"}]}],
        "WorktreeCreate": [{"hooks": [{"type": "command", "command": "~/bin/new-worktree"}]}]
    },
    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"}
}"""

EMIT = Path(sys.executable).parent / "hookdb-emit"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a run: HOME in the temporary directory, no collector anywhere."""
    home = tmp_path / "home"
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in (cs.CONFIG_DIR_ENV, "HOOKDB_OUTBOX")}
    return {**environ, "HOME": str(home), "HOOKDB_SOCKET": str(tmp_path / "run" / "hookdb.sock")}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def install_hooks(
    *args: str, cwd: Path, env: dict[str, str], expect: int | None = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hookdb"), "install-hooks", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if expect is not None:
        assert result.returncode == expect, result.stderr
    return result


def settings_of(project: Path) -> Path:
    return project / ".claude" / "settings.json"


def backup_of(path: Path) -> Path:
    return path.with_name(path.name + cs.BACKUP_SUFFIX)


def write_settings(project: Path, content: str | bytes) -> Path:
    path = settings_of(project)
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def hookdb_groups(settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Event -> the groups holding a hookdb handler."""
    return {
        event: found
        for event, groups in settings.get("hooks", {}).items()
        if (found := [g for g in groups if any(cs.is_hookdb_handler(h) for h in g["hooks"])])
    }


def assert_hookdb_everywhere(settings: dict[str, Any], handler_type: str = "command") -> None:
    """Exactly one hookdb group per installed event, last in the event's list, with the right matcher."""
    ours = hookdb_groups(settings)
    assert set(ours) == set(cs.INSTALLED_EVENTS)
    for event in cs.INSTALLED_EVENTS:
        groups = settings["hooks"][event]
        assert ours[event] == [groups[-1]]
        assert groups[-1].get("matcher") == ("*" if event in cs.TOOL_EVENTS else None)
        (handler,) = groups[-1]["hooks"]
        # Claude Code runs no http hooks for some events: --http gives them command hooks.
        command_only = handler_type == "http" and event in cls.COMMAND_ONLY_EVENTS
        assert handler["type"] == ("command" if command_only else handler_type), event
        assert handler["timeout"] == cs.TIMEOUT_SECONDS


def test_the_event_list_is_the_reference_and_only_worktree_create_is_left_out() -> None:
    assert cs.EVENTS == corpus.HOOK_EVENTS
    assert set(cs.EVENTS) - set(cs.ALL_EVENTS) == {"WorktreeCreate"}
    assert set(cs.ALL_EVENTS) - set(cs.INSTALLED_EVENTS) == {"MessageDisplay"} == cls.OPT_IN_EVENTS
    assert {"PostToolBatch"} <= cls.BACKGROUND_EVENTS
    assert not cls.BACKGROUND_EVENTS & cls.SYNC_EVENTS
    assert set(cs.INSTALLED_EVENTS) >= cs.TOOL_EVENTS
    assert set(cs.INSTALLED_EVENTS) >= cs.SYNC_EVENTS


def test_no_file_install_creates_it_and_uninstall_deletes_it(project: Path, env: dict[str, str]) -> None:
    path = settings_of(project)
    install_hooks(cwd=project, env=env)
    settings = json.loads(path.read_text())
    assert list(settings) == ["hooks"]
    assert list(settings["hooks"]) == list(cs.INSTALLED_EVENTS)
    assert_hookdb_everywhere(settings)
    for event, groups in settings["hooks"].items():
        assert groups[0]["hooks"][0]["command"] == f"{EMIT} {cs.MARKER}"
        # In the background: PostToolBatch only (MessageDisplay is not installed).
        assert groups[0]["hooks"][0].get("async", False) is (event == "PostToolBatch"), event
    assert path.read_text().startswith('{\n  "hooks": {\n    "PreToolUse": [\n')  # 2-space indent
    assert not backup_of(path).exists()  # there was nothing to back up

    result = install_hooks("--uninstall", cwd=project, env=env)
    assert "deleted" in result.stdout
    assert not path.exists()
    assert not backup_of(path).exists()
    assert path.parent.is_dir()  # the directory may hold other things; it is left


def test_empty_file_counts_as_empty_settings_and_comes_back_empty(project: Path, env: dict[str, str]) -> None:
    path = write_settings(project, b"")
    install_hooks(cwd=project, env=env)
    assert_hookdb_everywhere(json.loads(path.read_text()))
    assert backup_of(path).read_bytes() == b""

    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_bytes() == b""
    assert not backup_of(path).exists()


def test_user_hooks_and_settings_survive_and_uninstall_restores_the_bytes(
    project: Path, env: dict[str, str]
) -> None:
    path = write_settings(project, USER_SETTINGS)
    original = json.loads(USER_SETTINGS)
    install_hooks(cwd=project, env=env)
    settings = json.loads(path.read_text())

    assert {k: v for k, v in settings.items() if k != "hooks"} == {
        k: v for k, v in original.items() if k != "hooks"
    }
    assert list(settings) == list(original)  # key order kept
    assert_hookdb_everywhere(settings)
    for event, groups in original["hooks"].items():
        if event in cs.INSTALLED_EVENTS:  # the user's groups first, in their order, hookdb's appended
            assert settings["hooks"][event][:-1] == groups
        else:
            assert settings["hooks"][event] == groups
    assert settings["hooks"]["WorktreeCreate"] == original["hooks"]["WorktreeCreate"]
    text = path.read_text(encoding="utf-8")
    # Every line of the user's is kept as written (escapes, one-line arrays), but for the event lists
    # written on one line, which hookdb's group continues; hookdb's lines are added in the file's indent.
    for line in USER_SETTINGS.splitlines():
        if '"Stop"' not in line and '"SessionStart"' not in line:
            assert line.rstrip(",") in text, line
    assert '"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}, {"hooks": [{"type": ' in text
    assert '\n        "PostToolUse": [\n            {\n                "matcher": "*",\n' in text
    assert backup_of(path).read_text() == USER_SETTINGS

    installed, backup = snapshot(path), snapshot(backup_of(path))
    time.sleep(0.01)
    result = install_hooks(cwd=project, env=env)
    assert "no change, nothing written" in result.stdout
    assert snapshot(path) == installed  # not even the mtime
    assert snapshot(backup_of(path)) == backup

    result = install_hooks("--uninstall", cwd=project, env=env)
    assert "byte for byte" in result.stdout
    assert path.read_text() == USER_SETTINGS
    assert not backup_of(path).exists()
    result = install_hooks("--uninstall", cwd=project, env=env)
    assert "no change, nothing written" in result.stdout
    assert path.read_text() == USER_SETTINGS


def test_changing_the_form_replaces_hookdb_handlers_and_uninstall_still_restores_the_bytes(
    project: Path, env: dict[str, str]
) -> None:
    path = write_settings(project, USER_SETTINGS)
    install_hooks("--async", cwd=project, env=env)
    install_hooks(cwd=project, env=env)
    install_hooks("--command", "/opt/hookdb/bin/hookdb-emit --tenant research", cwd=project, env=env)
    settings = json.loads(path.read_text())
    assert_hookdb_everywhere(settings)
    assert settings["hooks"]["Stop"][-1]["hooks"][0]["command"] == (
        f"/opt/hookdb/bin/hookdb-emit --tenant research {cs.MARKER}"
    )
    install_hooks("--http", cwd=project, env=env)
    assert_hookdb_everywhere(json.loads(path.read_text()), "http")
    assert backup_of(path).read_text() == USER_SETTINGS  # still the file as it was before hookdb

    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_text() == USER_SETTINGS


def test_async_leaves_the_session_end_events_synchronous(project: Path, env: dict[str, str]) -> None:
    install_hooks("--async", cwd=project, env=env)
    settings = json.loads(settings_of(project).read_text())
    assert_hookdb_everywhere(settings)
    for event in cs.INSTALLED_EVENTS:
        handler = settings["hooks"][event][-1]["hooks"][0]
        assert handler.get("async", False) is (event not in cs.SYNC_EVENTS), event
    assert {"SessionEnd", "Stop"} <= cs.SYNC_EVENTS


@pytest.mark.parametrize("http", [False, True])
def test_all_events_adds_message_display_in_the_background_and_the_default_takes_it_out(
    project: Path, env: dict[str, str], http: bool
) -> None:
    form = ("--http",) if http else ()
    path = write_settings(project, USER_SETTINGS)
    result = install_hooks("--all-events", *form, cwd=project, env=env)
    assert f"installed for {len(cs.ALL_EVENTS)} events" in result.stdout
    settings = json.loads(path.read_text())
    assert set(hookdb_groups(settings)) == set(cs.ALL_EVENTS)
    for event in ("MessageDisplay", "PostToolBatch"):
        (handler,) = hookdb_groups(settings)[event][0]["hooks"]
        # http hooks start no process and have no background mode; command hooks go to the background.
        assert handler.get("async", False) is (not http), event

    result = install_hooks(*form, cwd=project, env=env)  # back to the default: MessageDisplay goes
    settings = json.loads(path.read_text())
    assert set(hookdb_groups(settings)) == set(cs.INSTALLED_EVENTS)
    assert "MessageDisplay" not in settings["hooks"]
    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_text() == USER_SETTINGS
    assert "--all-events" in install_hooks("--help", cwd=project, env=env).stdout


def test_http_form_takes_the_token_from_the_environment(project: Path, env: dict[str, str]) -> None:
    path = settings_of(project)
    secret = "s3cr3t-token-value"
    env = {**env, cs.TOKEN_ENV: secret}
    install_hooks("--http", cwd=project, env=env)
    settings = json.loads(path.read_text())
    assert_hookdb_everywhere(settings, "http")
    for event, groups in settings["hooks"].items():
        (handler,) = groups[-1]["hooks"]
        if event in cls.COMMAND_ONLY_EVENTS:
            assert handler["command"] == f"{EMIT} {cs.MARKER}"
            continue
        assert handler["url"] == "http://127.0.0.1:9465/v1/hooks/claude-code"
        assert handler["headers"]["Authorization"] == "Bearer $HOOKDB_HOOK_TOKEN"
        assert handler["allowedEnvVars"] == ["HOOKDB_HOOK_TOKEN"]
        assert "async" not in handler
    assert secret not in path.read_text()

    install_hooks(
        "--http", "--url", "https://hooks.example.net:8443/v1/hooks/claude-code", cwd=project, env=env
    )
    settings = json.loads(path.read_text())
    assert_hookdb_everywhere(settings, "http")
    assert {g[-1]["hooks"][0].get("url") for g in settings["hooks"].values()} == {
        "https://hooks.example.net:8443/v1/hooks/claude-code",
        None,
    }
    install_hooks("--uninstall", cwd=project, env=env)
    assert not path.exists()


INVALID = [
    pytest.param(b'{\n  "model": "x",\n}\n', 3, 1, "Expecting property name", id="trailing-comma"),
    pytest.param(b'{"model": "x" "env": {}}', 1, 15, "Expecting ',' delimiter", id="missing-comma"),
    pytest.param(b'{\n  "hooks": {"Stop": [}}\n}', 2, 22, "Expecting value", id="bad-array"),
    pytest.param(b'{"a": "NaN", "b": -Infinity}', 1, 19, "-Infinity is not a JSON value", id="infinity"),
    pytest.param(b"[]", 1, 1, "must be a JSON object", id="array"),
    pytest.param(b'\n  "just a string"', 2, 3, "must be a JSON object", id="string"),
    pytest.param(b'{\n  "model": "\xff"\n}', 2, 13, "not UTF-8", id="not-utf8"),
]


@pytest.mark.parametrize(("content", "line", "column", "message"), INVALID)
@pytest.mark.parametrize("mode", [(), ("--uninstall",), ("--dry-run",), ("--http",)])
def test_invalid_file_is_refused_with_line_and_column_and_left_untouched(
    project: Path,
    env: dict[str, str],
    content: bytes,
    line: int,
    column: int,
    message: str,
    mode: tuple[str, ...],
) -> None:
    path = write_settings(project, content)
    before = snapshot(path)
    result = install_hooks(*mode, cwd=project, env=env, expect=1)
    assert result.stderr.startswith(f"{path}:{line}:{column}: "), result.stderr
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]  # no backup, no temp file


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"hooks": []}', '"hooks" is an array'),
        ('{"hooks": {"Stop": {"hooks": []}}}', '"hooks.Stop" is an object'),
    ],
)
def test_hooks_that_cannot_be_merged_are_refused(
    project: Path, env: dict[str, str], content: str, where: str
) -> None:
    path = write_settings(project, content)
    before = snapshot(path)
    result = install_hooks(cwd=project, env=env, expect=1)
    assert result.stderr.startswith(f"{path}: {where}")
    assert snapshot(path) == before
    assert not backup_of(path).exists()


def test_dry_run_prints_a_diff_and_writes_nothing(project: Path, env: dict[str, str]) -> None:
    result = install_hooks("--dry-run", cwd=project, env=env)
    path = settings_of(project)
    assert result.stdout.startswith(f"--- /dev/null\n+++ {path}\n@@ ")
    assert not path.parent.exists()

    write_settings(project, USER_SETTINGS)
    before = snapshot(path)
    result = install_hooks("--dry-run", cwd=project, env=env)
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"--- {path}", f"+++ {path}"]
    added = [line for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert sum(cs.MARKER in line for line in added) == len(cs.INSTALLED_EVENTS)
    assert "\\ No newline at end of file" in lines  # the original ends without one
    assert snapshot(path) == before
    assert not backup_of(path).exists()

    install_hooks(cwd=project, env=env)
    installed = snapshot(path)
    result = install_hooks("--uninstall", "--dry-run", cwd=project, env=env)
    removed = [
        line for line in result.stdout.splitlines() if line.startswith("-") and not line.startswith("---")
    ]
    assert sum(cs.MARKER in line for line in removed) == len(cs.INSTALLED_EVENTS)
    assert snapshot(path) == installed
    assert backup_of(path).read_text() == USER_SETTINGS

    result = install_hooks("--dry-run", cwd=project, env=env)
    assert result.stdout.endswith("already installed; no change, nothing written\n")
    assert "---" not in result.stdout


@pytest.mark.parametrize("config_dir", [False, True])
def test_user_scope_edits_the_settings_in_home(
    tmp_path: Path, project: Path, env: dict[str, str], config_dir: bool
) -> None:
    if config_dir:
        env = {**env, cs.CONFIG_DIR_ENV: str(tmp_path / "claude-config")}
        path = tmp_path / "claude-config" / "settings.json"
    else:
        path = Path(env["HOME"]) / ".claude" / "settings.json"
    install_hooks("--user", cwd=project, env=env)
    assert_hookdb_everywhere(json.loads(path.read_text()))
    assert not settings_of(project).parent.exists()
    install_hooks("--user", "--uninstall", cwd=project, env=env)
    assert not path.exists()


def test_project_option_names_the_directory(tmp_path: Path, project: Path, env: dict[str, str]) -> None:
    install_hooks("--project", str(project), cwd=tmp_path, env=env)
    assert_hookdb_everywhere(json.loads(settings_of(project).read_text()))
    result = install_hooks("--project", str(tmp_path / "typo"), cwd=tmp_path, env=env, expect=2)
    assert "no such directory" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_installed_command_runs_and_exits_0_quickly_without_a_collector(
    tmp_path: Path, project: Path, env: dict[str, str]
) -> None:
    install_hooks(cwd=project, env=env)
    settings = json.loads(settings_of(project).read_text())
    command = settings["hooks"]["PreToolUse"][-1]["hooks"][0]["command"]
    started = time.monotonic()
    result = subprocess.run(  # as Claude Code runs it: through the shell, the hook JSON on stdin
        command,
        shell=True,
        input=corpus.raw_hook_payload("PreToolUse"),
        capture_output=True,
        env=env,
        cwd=project,
        timeout=10,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert (result.returncode, result.stdout) == (0, b"")
    assert elapsed < 1.5
    assert b"not reachable" in result.stderr
    assert len(list((tmp_path / "run" / "outbox").glob("*.out"))) == 1  # the event was kept


def test_hand_written_hookdb_emit_hook_is_kept_and_warned_about(project: Path, env: dict[str, str]) -> None:
    own = {"type": "command", "command": "/opt/hookdb/.venv/bin/hookdb-emit"}
    original = json.dumps({"hooks": {"Stop": [{"hooks": [own]}]}}, indent=2) + "\n"
    path = write_settings(project, original)
    result = install_hooks(cwd=project, env=env)
    assert "Stop" in result.stderr
    assert "recorded twice" in result.stderr
    settings = json.loads(path.read_text())
    assert settings["hooks"]["Stop"][0] == {"hooks": [own]}
    assert_hookdb_everywhere(settings)
    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_text() == original


def test_file_mode_is_kept_and_a_symlink_stays_a_symlink(
    tmp_path: Path, project: Path, env: dict[str, str]
) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "settings.json"
    real.write_text(USER_SETTINGS)
    real.chmod(0o640)
    link = settings_of(project)
    link.parent.mkdir()
    link.symlink_to(real)

    install_hooks(cwd=project, env=env)
    assert link.is_symlink()
    assert_hookdb_everywhere(json.loads(real.read_text()))
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert stat.S_IMODE(backup_of(real).stat().st_mode) == 0o640  # it holds the same secrets
    assert sorted(p.name for p in dotfiles.iterdir()) == ["settings.json", "settings.json.hookdb-backup"]

    install_hooks("--uninstall", cwd=project, env=env)
    assert link.is_symlink()
    assert real.read_text() == USER_SETTINGS
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_uninstall_keeps_what_the_user_changed_meanwhile(project: Path, env: dict[str, str]) -> None:
    path = write_settings(project, USER_SETTINGS)
    install_hooks(cwd=project, env=env)
    settings = json.loads(path.read_text())
    settings["model"] = "claude-sonnet-4-5"
    settings["hooks"]["Stop"].insert(0, {"hooks": [{"type": "command", "command": "notify-send stop"}]})
    edited = json.dumps(settings, indent=2)
    path.write_text(edited)

    result = install_hooks("--uninstall", cwd=project, env=env)
    assert "backup: " in result.stdout
    after = json.loads(path.read_text())
    expected = json.loads(USER_SETTINGS)
    expected["model"] = "claude-sonnet-4-5"
    expected["hooks"]["Stop"].insert(0, {"hooks": [{"type": "command", "command": "notify-send stop"}]})
    assert after == expected
    assert backup_of(path).read_text() == edited


@pytest.mark.parametrize(
    "args",
    [
        ("--async", "--http"),
        ("--uninstall", "--http"),
        ("--uninstall", "--async"),
        ("--url", "http://127.0.0.1:9465/v1/hooks/claude-code"),
        ("--http", "--url", "ftp://example.net/"),
        ("--command", "a\nb"),
    ],
)
def test_contradicting_options_exit_2_and_write_nothing(
    project: Path, env: dict[str, str], args: tuple[str, ...]
) -> None:
    result = install_hooks(*args, cwd=project, env=env, expect=2)
    assert result.stderr.startswith("hookdb install-hooks: ")
    assert not settings_of(project).parent.exists()


EMPTY = [None, "", " \n", "{}", '{"hooks": {}}\n', '{"hooks": {"Stop": []}}']
FORMS = [
    cs.HookForm(command="/x/hookdb-emit"),
    cs.HookForm(command="hookdb-emit", background=True),
    cs.HookForm(command="hookdb-emit", url="http://h/"),
]


@pytest.mark.parametrize("text", [*EMPTY, USER_SETTINGS, '\ufeff{\r\n\t"model": "x"\r\n}\r\n'])
@pytest.mark.parametrize("form", FORMS)
def test_plans_are_idempotent_and_reversible(text: str | None, form: cs.HookForm) -> None:
    installed = cs.plan_install(text, form)
    assert cs.plan_install(installed, form) == installed
    assert cs.plan_install(installed, cs.HookForm(command="other")) != installed
    assert cs.plan_uninstall(installed, text) == text  # with the backup: the very text
    restored = cs.plan_uninstall(installed, None)  # without: the same settings, perhaps laid out anew
    if text in EMPTY:
        assert restored is None
    else:
        assert restored is not None
        assert cs.parse(restored, "r") == cs.parse(text, "t")


def test_layout_of_the_file_is_kept_when_it_is_written() -> None:
    installed = cs.plan_install('\ufeff{\r\n\t"model": "x"\r\n}\r\n', FORMS[0])
    assert installed.startswith('\ufeff{\r\n\t"model": "x",\r\n\t"hooks": {\r\n\t\t"PreToolUse"')
    assert installed.endswith("}\r\n")
    assert installed.count("\n") == installed.count("\r\n")


def test_the_hookdb_command_runs_it_too(tmp_path: Path) -> None:
    from conftest import BIN

    hookdb = str(BIN / "hookdb")
    installed = subprocess.run(
        [hookdb, "install-hooks", "--project", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert "PreToolUse" in settings["hooks"]
    removed = subprocess.run(
        [hookdb, "install-hooks", "--project", str(tmp_path), "--uninstall"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert removed.returncode == 0, removed.stderr
    assert not (tmp_path / ".claude" / "settings.json").exists()


def test_http_hooks_go_with_command_hooks_for_the_events_claude_code_runs_no_http_hooks_for(
    project: Path, env: dict[str, str]
) -> None:
    assert {"SessionStart", "Setup"} <= cls.COMMAND_ONLY_EVENTS <= set(cs.INSTALLED_EVENTS)
    path = write_settings(project, USER_SETTINGS)
    install_hooks("--http", "--command", "/opt/hookdb/bin/hookdb-emit --tenant acme", cwd=project, env=env)
    settings = json.loads(path.read_text())
    assert_hookdb_everywhere(settings, "http")
    for event in cls.COMMAND_ONLY_EVENTS:
        (handler,) = settings["hooks"][event][-1]["hooks"]
        assert handler == {
            "type": "command",
            "command": f"/opt/hookdb/bin/hookdb-emit --tenant acme {cs.MARKER}",
            "timeout": cs.TIMEOUT_SECONDS,
        }
    assert settings["hooks"]["SessionStart"][0]["hooks"][0]["command"] == "cat NOTES.md"  # the user's, kept
    installed = path.read_bytes()
    install_hooks("--http", "--command", "/opt/hookdb/bin/hookdb-emit --tenant acme", cwd=project, env=env)
    assert path.read_bytes() == installed  # idempotent
    install_hooks(cwd=project, env=env)  # back to command hooks everywhere: nothing left of the http ones
    assert_hookdb_everywhere(json.loads(path.read_text()))
    install_hooks("--http", cwd=project, env=env)
    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_text() == USER_SETTINGS


def changed_lines(result: subprocess.CompletedProcess[str]) -> tuple[list[str], list[str]]:
    """The lines a ``--dry-run`` diff takes out and puts in."""
    body = result.stdout.splitlines()[2:]
    return (
        [line for line in body if line.startswith("-")],
        [line for line in body if line.startswith("+")],
    )


COMPACT = (
    '{"model":"claude-opus-4-1","permissions":{"allow":["Read"]},'
    '"hooks":{"Stop":[{"hooks":[{"type":"command","command":"say done"}]}]}}\n'
)
FOUR_SPACES = json.dumps(
    {
        "model": "claude-opus-4-1",
        "permissions": {"allow": ["Bash(npm run test:*)"], "deny": []},
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]},
    },
    indent=4,
)


def test_a_compact_one_line_file_stays_one_line(project: Path, env: dict[str, str]) -> None:
    path = write_settings(project, COMPACT)
    before = snapshot(path)
    result = install_hooks("--dry-run", cwd=project, env=env)
    removed, added = changed_lines(result)
    assert removed == ["-" + COMPACT.rstrip("\n")]  # one line out, one line in
    assert len(added) == 1
    assert added[0].startswith(
        '+{"model":"claude-opus-4-1","permissions":{"allow":["Read"]},"hooks":{"Stop":['
    )
    assert '"timeout":5}]}' in added[0]  # hookdb's part in the file's own separators
    assert result.stdout.endswith(
        f"{path}: dry run, nothing written (the file would be changed: +1 -1 lines)\n"
    )
    assert snapshot(path) == before
    assert not backup_of(path).exists()

    install_hooks(cwd=project, env=env)
    assert path.read_text() == added[0][1:] + "\n"
    assert_hookdb_everywhere(json.loads(path.read_text()))
    assert "no change, nothing written" in install_hooks(cwd=project, env=env).stdout
    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_text() == COMPACT


def test_a_four_space_file_keeps_its_lines_and_gets_hookdb_in_its_indent(
    project: Path, env: dict[str, str]
) -> None:
    path = write_settings(project, FOUR_SPACES)
    before = snapshot(path)
    result = install_hooks("--dry-run", cwd=project, env=env)
    removed, added = changed_lines(result)
    # Nothing of the user's is rewritten: at most the line that gains a comma is taken out.
    assert len(removed) <= 1
    new_text = cs.plan_install(FOUR_SPACES, cs.HookForm(command="x"))
    assert all(line.rstrip(",") in new_text for line in FOUR_SPACES.splitlines())
    assert all(line == "+" or line.startswith("+    ") for line in added)
    assert '+        "PostToolUse": [' in added  # 8 spaces: the file's 4-space indent at depth 2
    assert sum(cs.MARKER in line for line in added) == len(cs.INSTALLED_EVENTS)
    assert "dry run, nothing written" in result.stdout.splitlines()[-1]
    assert snapshot(path) == before

    install_hooks(cwd=project, env=env)
    assert_hookdb_everywhere(json.loads(path.read_text()))
    result = install_hooks("--uninstall", "--dry-run", cwd=project, env=env)
    assert "dry run, nothing written" in result.stdout.splitlines()[-1]
    install_hooks("--uninstall", cwd=project, env=env)
    assert path.read_text() == FOUR_SPACES


def test_a_changed_file_is_rewritten_only_where_hookdb_is(project: Path, env: dict[str, str]) -> None:
    """Without the backup (the user edited the file since), uninstall too keeps the user's lines."""
    path = write_settings(project, USER_SETTINGS)
    install_hooks(cwd=project, env=env)
    edited = path.read_text().replace('"claude-opus-4-1"', '"claude-sonnet-4-5"')
    path.write_text(edited)
    result = install_hooks("--uninstall", cwd=project, env=env)
    assert "(backup: " in result.stdout
    assert path.read_text() == USER_SETTINGS.replace('"claude-opus-4-1"', '"claude-sonnet-4-5"')


def test_dry_run_of_a_new_file_says_nothing_was_written(project: Path, env: dict[str, str]) -> None:
    result = install_hooks("--dry-run", cwd=project, env=env)
    assert result.stdout.splitlines()[-1].startswith(
        f"{settings_of(project)}: dry run, nothing written (the file would be created: +"
    )
    assert not settings_of(project).parent.exists()


# -- --otel: Claude Code's telemetry to hookdb's OTLP receiver ---------------------------------------------

TOKEN = "tok-a1b2c3"
TELEMETRY = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
    "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {TOKEN}",
}


@pytest.fixture
def otel_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, cs.TOKEN_ENV: TOKEN}


def user_settings(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) / ".claude" / "settings.json"


def test_otel_puts_the_telemetry_in_the_user_settings_and_the_hooks_in_the_project(
    project: Path, otel_env: dict[str, str]
) -> None:
    user = user_settings(otel_env)

    done = install_hooks("--project", str(project), "--otel", cwd=project, env=otel_env)

    project_settings = json.loads(settings_of(project).read_text())
    assert_hookdb_everywhere(project_settings)
    assert "env" not in project_settings  # Claude Code ignores telemetry settings in a project
    user_env = json.loads(user.read_text())["env"]
    assert user_env == {**TELEMETRY, cs.OTEL_MARKER: " ".join(TELEMETRY)}
    assert "hooks" not in json.loads(user.read_text())
    assert stat.S_IMODE(user.stat().st_mode) == 0o600  # it holds the token
    assert f"{settings_of(project)}: hookdb's hooks installed" in done.stdout
    assert f"{user}: Claude Code's telemetry set to go to http://127.0.0.1:4318" in done.stdout

    before = snapshot(settings_of(project)), snapshot(user)
    again = install_hooks("--project", str(project), "--otel", cwd=project, env=otel_env)
    assert (snapshot(settings_of(project)), snapshot(user)) == before
    assert again.stdout.count("no change, nothing written") == 2

    no_token = {k: v for k, v in otel_env.items() if k != cs.TOKEN_ENV}  # uninstall needs none
    gone = install_hooks("--project", str(project), "--otel", "--uninstall", cwd=project, env=no_token)
    assert not settings_of(project).exists()
    assert not user.exists()
    assert f"{user}: hookdb's telemetry environment removed" in gone.stdout


def test_otel_with_user_writes_both_into_the_user_file_and_uninstall_restores_its_bytes(
    project: Path, otel_env: dict[str, str]
) -> None:
    user = user_settings(otel_env)
    user.parent.mkdir()
    user.write_text(USER_SETTINGS)  # its env already has CLAUDE_CODE_ENABLE_TELEMETRY=1: the user's own

    done = install_hooks(
        "--user", "--otel", "--otel-endpoint", "https://hookdb.lan:4318", cwd=project, env=otel_env
    )

    settings = json.loads(user.read_text())
    assert_hookdb_everywhere(settings)
    ours = [k for k in TELEMETRY if k != "CLAUDE_CODE_ENABLE_TELEMETRY"]
    assert settings["env"] == {
        "GREETING": "grüß dich",
        **TELEMETRY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://hookdb.lan:4318",
        cs.OTEL_MARKER: " ".join(ours),
    }
    assert '"GREETING": "gr\\u00fc\\u00df dich"' in user.read_text()  # the user's bytes stay
    assert done.stdout.splitlines() == [
        f"{user}: {done.stdout.split(': ', 1)[1].strip()}"
    ]  # one file, one line
    assert "hooks installed" in done.stdout
    assert "telemetry set to go to https://hookdb.lan:4318" in done.stdout
    assert done.stderr == ""

    # Another endpoint: hookdb's keys are updated in place, nothing added.
    install_hooks("--user", "--otel", cwd=project, env=otel_env)
    again = json.loads(user.read_text())["env"]
    assert again["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert list(again) == list(settings["env"])

    install_hooks("--user", "--uninstall", cwd=project, env=otel_env)
    assert user.read_text() == USER_SETTINGS
    assert not backup_of(user).exists()


def test_otel_leaves_a_users_own_telemetry_value_and_warns(project: Path, otel_env: dict[str, str]) -> None:
    user = user_settings(otel_env)
    user.parent.mkdir()
    mine = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_OTLP_HEADERS": "x-key=secret-of-mine"}
    original = json.dumps({"env": mine}, indent=2) + "\n"
    user.write_text(original)

    done = install_hooks("--otel", cwd=project, env=otel_env)

    env = json.loads(user.read_text())["env"]
    assert {k: env[k] for k in mine} == mine
    assert env[cs.OTEL_MARKER].split() == [k for k in TELEMETRY if k not in mine]
    assert '"env.OTEL_METRICS_EXPORTER" is "prometheus", not "otlp"' in done.stderr
    assert '"env.OTEL_EXPORTER_OTLP_HEADERS" differs from hookdb\'s: yours, left as it is' in done.stderr
    assert "secret-of-mine" not in done.stderr

    install_hooks("--otel", "--uninstall", cwd=project, env=otel_env)
    assert user.read_text() == original
    assert not settings_of(project).exists()


def test_otel_without_the_token_is_refused_and_writes_nothing(project: Path, env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != cs.TOKEN_ENV}
    done = install_hooks("--otel", cwd=project, env=env, expect=2)
    assert f"--otel needs ${cs.TOKEN_ENV}" in done.stderr
    assert not settings_of(project).exists()
    assert not user_settings(env).exists()
    bad = install_hooks("--otel-endpoint", "http://x:4318", cwd=project, env=env, expect=2)
    assert "--otel-endpoint goes with --otel" in bad.stderr


def test_otel_dry_run_shows_both_changes_and_writes_nothing(project: Path, otel_env: dict[str, str]) -> None:
    done = install_hooks("--otel", "--dry-run", cwd=project, env=otel_env)
    assert f"+++ {settings_of(project)}" in done.stdout
    assert f"+++ {user_settings(otel_env)}" in done.stdout
    assert f'+    "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer {TOKEN}",' in done.stdout
    assert done.stdout.count("dry run, nothing written") == 2
    assert not settings_of(project).exists()
    assert not user_settings(otel_env).exists()


@pytest.mark.parametrize("text", [None, "", USER_SETTINGS, '{"env":{"A":"1"},"hooks":{}}'])
def test_otel_plans_are_idempotent_and_reversible(text: str | None) -> None:
    telemetry = cs.Telemetry(token=TOKEN)
    once = cs.plan_otel(text, telemetry)
    assert cs.plan_otel(once, telemetry) == once
    assert cs.plan_uninstall(once, text) == text
