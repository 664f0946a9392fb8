"""Prometheus counters of the tokens and cost the usage ledger records: a real collector reads the real
transcript fixture on Stop, and /metrics counts its three requests once, by model and source only."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from test_ledger import DATA, SESSION, TOTAL, stop, wait_ledger
from test_operate import scrape

from conftest import run_sql, wait_for


def test_tokens_and_cost_recorded_are_counted_once_without_tenant_labels(
    start_collector, socket_path: Path, dsn: str, tmp_path: Path
) -> None:
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    collector = start_collector()
    stop(socket_path, transcript)
    wait_ledger(dsn, 3)
    stop(socket_path, transcript)  # read again: nothing new, nothing counted again
    wait_for(lambda: run_sql(dsn, "SELECT count(*) FROM hook_audit_log")[0][0] == 2)  # and its usage applied
    samples = scrape(collector)
    [row] = run_sql(
        dsn,
        "SELECT sum(input_tokens) AS input, sum(output_tokens) AS output, "
        "sum(cache_read_tokens) AS cache_read, sum(cache_creation_5m_tokens) AS cache_creation_5m, "
        "sum(cost_usd) AS cost FROM usage_ledger",
    )
    labels = "model=claude-sonnet-4-5,source=transcript"
    for kind in ("input", "output", "cache_read", "cache_creation_5m"):
        key = f"hookdb_usage_tokens_total{{kind={kind},{labels}}}"
        assert samples[key] == row[kind], kind
    assert f"hookdb_usage_tokens_total{{kind=cache_creation_1h,{labels}}}" not in samples  # none of them
    cost = samples[f"hookdb_usage_cost_usd_total{{{labels}}}"]
    assert Decimal(str(cost)) == pytest.approx(row["cost"]) == TOTAL
    usage = [k for k in samples if k.startswith("hookdb_usage_")]
    assert usage
    assert not [k for k in usage if "tenant" in k or SESSION in k]
