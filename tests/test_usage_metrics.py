"""Prometheus counters of the tokens and cost the usage ledger records: a real collector reads the real
transcript fixture on Stop, and /metrics counts its three requests once, by model and source only; a
batch whose transaction is written again counts them once too."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import trio
import trio_asyncio
from test_ledger import DATA, SESSION, TOTAL, stop, wait_ledger
from test_operate import scrape

from hookdb.collector.ops import metrics
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row
from hookdb.collector.store.sink import PostgresSink

from conftest import migrate, run_sql, wait_for


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


def test_a_batch_written_again_counts_its_requests_once(dsn: str, tmp_path: Path) -> None:
    """Tenant a's Stop has its usage recorded in the transaction; tenant b's event then finds no
    partition (none for its month, no default), so the batch is written again once the partition is
    made: the counters grow by the requests once."""
    migrate(dsn)
    run_sql(dsn, "ALTER TABLE hook_audit_log DETACH PARTITION hook_audit_log_default")
    run_sql(dsn, "DROP TABLE hook_audit_log_default")
    transcript = tmp_path / f"{SESSION}.jsonl"
    transcript.write_bytes(DATA)
    now, later = datetime.now(UTC), datetime(2031, 5, 15, tzinfo=UTC)
    stop = msgspec.json.encode(
        {"hook_event_name": "Stop", "session_id": SESSION, "transcript_path": str(transcript)}
    )
    uid = os.getuid()
    rows = [
        Row("a", uuid.uuid4(), now, now, SESSION, "Stop", None, "claude-code", 1, uid, uid, stop),
        Row("b", uuid.uuid4(), later, now, "s", "Stop", None, "app", None, None, None, b"{}"),
    ]
    cost = metrics.usage_cost.labels("claude-sonnet-4-5", "transcript")
    before = cost._value.get()

    async def write() -> int:
        async with trio_asyncio.open_loop():
            sink = await PostgresSink.connect(ConnectOptions(dsn=dsn, application_name="test-retry"))
            try:
                return await sink.write(rows)
            finally:
                await sink.aclose()

    assert trio.run(write) == 2
    assert run_sql(dsn, "SELECT count(*) FROM usage_ledger")[0][0] == 3
    assert Decimal(str(cost._value.get() - before)) == pytest.approx(TOTAL)
