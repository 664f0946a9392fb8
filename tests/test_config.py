"""The configuration: one documented place for every setting, and the example file kept true to it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import msgspec

from hookdb.collector import config

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "collector.toml.example"
HEADER = """\
# hookdb collector configuration: every setting with its default.
# Install as /etc/hookdb/collector.toml (or pass --config PATH); check it with `hookdb check-config PATH`.
# Any setting can also be given as `--set section.key=value`. When empty, database.dsn, listener.socket
# and collector.state_dir fall back to $HOOKDB_DSN, $HOOKDB_SOCKET and $HOOKDB_STATE_DIR.
"""


def field_docs() -> dict[tuple[str, str], str]:
    """The docstring under each field of the config Structs, read from the source."""
    tree = ast.parse(Path(config.__file__).read_text())
    docs = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for field, after in zip(node.body, [*node.body[1:], None], strict=True):
                documented = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and documented:
                    docs[(node.name, field.target.id)] = after.value.value  # type: ignore[union-attr]
    return docs


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


DICT_EXAMPLES = {
    "tokens": 'acme = ["sha256:…"]',  # what `hookdb hash-token` prints
    "uids": '1000 = ["acme"], alice = ["acme", "beta"]',
    "gids": 'agents = ["acme"]',
    "overrides": '"claude-sonnet-4-5" = { input = 3, output = 15 }',
    "transcript_owners": 'acme = "alice"',
}


def render_example() -> str:
    docs = field_docs()
    lines = [HEADER]
    defaults = config.Config()
    for name in defaults.__struct_fields__:
        section = getattr(defaults, name)
        lines.append(f"[{name}]")
        for key in type(section).__struct_fields__:
            lines += [f"# {line}" for line in docs[(type(section).__name__, key)].splitlines()]
            value = getattr(section, key)
            if isinstance(value, dict):
                # An inline table, so that uncommenting it leaves the settings below in their section.
                lines += [f"# e.g. {key} = {{ {DICT_EXAMPLES[key]} }}", f"{key} = {{}}"]
            elif key == "socket_mode":
                lines.append(f"{key} = 0o{value:o}")
            else:
                lines.append(f"{key} = {toml_value(value)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def test_every_setting_is_documented() -> None:
    docs = field_docs()
    for name in config.Config.__struct_fields__:
        section = type(getattr(config.Config(), name))
        for key in section.__struct_fields__:
            assert docs.get((section.__name__, key)), f"{name}.{key} has no docstring in collector/config.py"


def test_the_example_file_lists_every_setting_with_its_default() -> None:
    expected = render_example()
    if os.environ.get("HOOKDB_REGENERATE"):
        EXAMPLE.write_text(expected)
    assert EXAMPLE.read_text() == expected, (
        "deploy/collector.toml.example is stale: HOOKDB_REGENERATE=1 pytest"
    )
    assert config.load(str(EXAMPLE)) == config.Config()


def test_overrides_take_toml_values() -> None:
    cfg = config.load(None, ["spool.fsync=always", "batch.linger_seconds=0.5", 'tenants.uids={1000 = ["a"]}'])
    assert (cfg.spool.fsync, cfg.batch.linger_seconds, cfg.tenants.uids) == ("always", 0.5, {"1000": ["a"]})
    assert msgspec.to_builtins(config.load(None, [])) == msgspec.to_builtins(config.Config())


def test_writers_auto_is_one_connection_per_process_when_processes_write_at_once() -> None:
    def writers(*overrides: str) -> tuple[int, int]:
        database = config.load(None, list(overrides)).database
        return database.processes, database.writer_connections

    assert writers("database.delivery_processes=2") == (2, 1)
    assert writers("database.delivery_processes=3") == (3, 1)
    assert writers("database.delivery_processes=1") == (1, 2)  # in the collector's own process
    assert writers("database.delivery_processes=2", "database.writers=3") == (2, 3)
    assert writers("database.delivery_processes=1", "database.writers=1") == (1, 1)
