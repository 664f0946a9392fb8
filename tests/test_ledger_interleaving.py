"""Reads of one transcript committed out of order (two writers, or two delivery processes, each with a
position of its own): the durable offset only moves forward, and every request is in the ledger once.

The ledger's two steps driven directly, on a real PostgreSQL and real files: ``ledger.read`` (as the
projections run it before the transaction) and ``ledger.apply`` (in the transaction, under the tenant's
row-level security)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import trio
import trio_asyncio
from test_ledger import DATA, REQUESTS, SESSION

from hookdb.collector.store import ledger
from hookdb.collector.store.connect import ConnectOptions
from hookdb.collector.store.rows import Row

from conftest import migrate, run_sql

TENANT = "default"


def stop_row(transcript: Path) -> tuple[Row, dict[str, object]]:
    payload = {"hook_event_name": "Stop", "session_id": SESSION, "transcript_path": str(transcript)}
    now = datetime.now(UTC)
    row = Row(
        TENANT, uuid.uuid4(), now, now, SESSION, "Stop", None, "claude-code",
        os.getpid(), os.getuid(), os.getgid(), msgspec.json.encode(payload),
    )  # fmt: skip
    return row, payload


def test_a_read_that_ended_earlier_but_commits_later_leaves_the_further_offset(
    dsn: str, tmp_path: Path
) -> None:
    migrate(dsn)
    transcript = tmp_path / f"{SESSION}.jsonl"
    second = DATA.rindex(b"\n", 0, DATA.index(REQUESTS[1].encode())) + 1  # before the second request
    third = DATA.rindex(b"\n", 0, DATA.index(REQUESTS[2].encode())) + 1  # before the third
    options = ConnectOptions(dsn=dsn)

    async def apply(found: ledger.Usage) -> None:
        conn = await options.connect()
        # jsonb as the sink's connections pass it: its binary format, the JSON text behind a version byte.
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=b"\x01".__add__, decoder=lambda b: b[1:], format="binary"
        )
        try:
            async with conn.transaction():
                await options.begin(conn, TENANT)
                await ledger.apply(conn, found)
        finally:
            await conn.close()

    async def main() -> None:
        async with trio_asyncio.open_loop():
            row, payload = stop_row(transcript)
            transcript.write_bytes(DATA[:second])
            await trio_asyncio.aio_as_trio(apply)(await ledger.read([row], [payload]))  # the first request
            transcript.write_bytes(DATA[:third])
            early = await ledger.read([row], [payload])  # the second request: this one commits last
            transcript.write_bytes(DATA)
            later = await ledger.read([row], [payload])  # read on from the same position, further
            await trio_asyncio.aio_as_trio(apply)(later)
            await trio_asyncio.aio_as_trio(apply)(early)

    trio.run(main)
    [read] = run_sql(dsn, "SELECT read_offset, cost_state IS NOT NULL AS cost FROM transcript_reads")
    assert read["read_offset"] == len(DATA)  # not moved back to where the earlier read ended
    assert read["cost"]  # the later read's cost-state (the file's last line) stands
    stored = run_sql(dsn, "SELECT request_id FROM usage_ledger ORDER BY at, request_id")
    assert [r["request_id"] for r in stored] == REQUESTS
