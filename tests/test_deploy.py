"""What ships in deploy/: systemd units that verify and are hardened, alert rules that pass their own
unit tests, and a dashboard and rules that only name metrics the collector exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hookdb.collector.ops import metrics

from conftest import BIN

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = [
    "hookdb-api.service",
    "hookdb-collector.service",
    "hookdb-collector.socket",
    "hookdb-partitions.service",
    "hookdb-partitions.timer",
]


def tool(name: str) -> str:
    """The tool's path; in CI a missing tool fails the test, elsewhere it skips with a loud reason."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"SKIPPED LOUDLY: {name} is not installed here (CI installs it)")
    return path


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this environment's hookdb (verify checks that it exists)."""
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/hookdb/bin/hookdb", str(BIN / "hookdb")))
    return tmp_path


def test_units_verify(units: Path) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", *(str(units / n) for n in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("service", ["hookdb-collector.service", "hookdb-api.service"])
def test_service_exposure_is_at_most_2_5(units: Path, service: str) -> None:
    result = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", str(units / service)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


def test_service_is_notify_type_with_watchdog_and_its_own_user() -> None:
    text = (DEPLOY / "systemd" / "hookdb-collector.service").read_text()
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "User=hookdb",
        "StateDirectory=hookdb",
        "RuntimeDirectory=hookdb",
        "WatchdogSec=",
        "EnvironmentFile=-/etc/hookdb/collector.env",
    ]:
        assert line in text


def test_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    folder = DEPLOY / "prometheus"
    for args in (
        ["check", "rules", "hookdb-alerts.yml"],
        ["test", "rules", "hookdb-alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def referenced_names(text: str) -> set[str]:
    return set(re.findall(r"\bhookdb_[a-z_]+", text))


def test_dashboard_and_rules_name_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "prometheus" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    rules = (DEPLOY / "prometheus" / "hookdb-alerts.yml").read_text()
    exported = exported_names()
    assert referenced_names(exprs) - exported == set()
    assert referenced_names(rules) - exported == set()
    assert len(referenced_names(exprs)) >= 10


def test_the_per_user_unit_verifies(tmp_path: Path) -> None:
    """``deploy/systemd/user/``: what the README's ``systemctl --user`` steps install."""
    text = (DEPLOY / "systemd" / "user" / "hookdb-collector.service").read_text()
    assert "ExecStart=/opt/hookdb/bin/hookdb collector run" in text  # the README's sed replaces this path
    unit = tmp_path / "hookdb-collector.service"
    unit.write_text(text.replace("/opt/hookdb/bin/hookdb", str(BIN / "hookdb")))
    result = subprocess.run(
        [tool("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
