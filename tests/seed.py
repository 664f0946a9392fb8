"""Synthetic session history for the read API's tests and benchmark, written straight into PostgreSQL.

Deterministic: session ``i`` of a seed always has the same id, status, model, cost and events, so tests
can compute expected answers independently. Rows go in with COPY as the superuser (who bypasses
row-level security); the trigger on ``sessions`` still notifies listeners.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from hookdb.collector.store import summary

MODELS = ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5")
AGENT_TYPES = ("main", "reviewer", "section-writer")
STATUSES = ("completed", "running", "ended", "failed")
TOOLS = ("Read", "Bash", "Edit", "Grep", "Write")
BASE = datetime(2026, 11, 1, tzinfo=UTC)

SESSION_COLUMNS = (
    "tenant_id", "session_id", "status", "status_at", "model", "agent_type", "cwd", "source", "started_at",
    "updated_at", "ended_at", "event_count", "subagent_count", "report_count", "cost_usd", "meta",
)  # fmt: skip
REPORT_COLUMNS = (
    "tenant_id", "session_id", "path", "report_type", "content", "sha256", "word_count", "written_at",
    "event_id",
)  # fmt: skip
EVENT_COLUMNS = (
    "tenant_id", "event_id", "occurred_at", "received_at", "session_id", "event_type", "tool_name", "source",
    "payload",
)  # fmt: skip


@dataclass
class Seed:
    """What to write: ``sessions`` sessions of ``tenant``, ``events`` events each, one minute apart."""

    tenant: str
    sessions: int
    events: int = 8
    start: datetime = BASE
    prefix: str = "s"
    reports: bool = True

    def session_id(self, i: int) -> str:
        return f"{self.prefix}-{i:06d}"

    def started_at(self, i: int) -> datetime:
        return self.start + timedelta(minutes=i)


def session_row(seed: Seed, i: int) -> tuple[Any, ...]:
    started = seed.started_at(i)
    status = STATUSES[i % len(STATUSES)]
    meta: dict[str, Any] = {}
    if i % 3 == 0:
        meta["qa_score"] = (i * 7) % 101
    if status != "running":
        meta["word_count"] = 100 + i
    return (
        seed.tenant,
        seed.session_id(i),
        status,
        started + timedelta(seconds=seed.events),
        MODELS[i % len(MODELS)],
        AGENT_TYPES[i % len(AGENT_TYPES)],
        f"/work/{seed.prefix}/{i}",
        "startup",
        started,
        started + timedelta(seconds=seed.events),
        started + timedelta(seconds=seed.events) if status == "ended" else None,
        seed.events,
        i % 4,
        1 if seed.reports else 0,
        Decimal(i % 50) / 100 + Decimal("0.01"),
        json.dumps(meta),
    )


def event_rows(seed: Seed, i: int) -> list[tuple[Any, ...]]:
    """A SessionStart, then tool calls (PreToolUse/PostToolUse pairs, 250 ms apart), then a Stop."""
    started = seed.started_at(i)
    session_id = seed.session_id(i)
    rows = []
    for n in range(seed.events):
        at = (
            started
            + timedelta(seconds=n)
            + (timedelta(milliseconds=250) if n % 2 == 0 and n else timedelta())
        )
        if n == 0:
            kind, tool, payload = (
                "SessionStart",
                None,
                {"source": "startup", "model": MODELS[i % len(MODELS)]},
            )
        elif n == seed.events - 1:
            kind, tool, payload = "Stop", None, {"stop_hook_active": False}
        else:
            call = (n - 1) // 2
            tool = TOOLS[call % len(TOOLS)]
            kind = "PreToolUse" if n % 2 == 1 else "PostToolUse"
            payload = {"tool_name": tool, "tool_use_id": f"toolu_{i}_{call}", "tool_input": {"n": n}}
        payload |= {"hook_event_name": kind, "session_id": session_id, "cwd": f"/work/{seed.prefix}/{i}"}
        event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{seed.tenant}/{session_id}/{n}")
        rows.append(
            (seed.tenant, event_id, at, at, session_id, kind, tool, "claude-code", json.dumps(payload))
        )
    return rows


def report_row(seed: Seed, i: int, content: str | None = None) -> tuple[Any, ...]:
    text = content if content is not None else f"# Report {i}\n\nQA score: {(i * 7) % 101}\n\n- done\n"
    return (
        seed.tenant,
        seed.session_id(i),
        f"/work/{seed.prefix}/{i}/reports/summary.md",
        "summary",
        text,
        hashlib.sha256(text.encode()).hexdigest(),
        len(text.split()),
        seed.started_at(i) + timedelta(seconds=1),
        uuid.uuid5(uuid.NAMESPACE_URL, f"{seed.tenant}/{seed.session_id(i)}/report"),
    )


async def write(conn: asyncpg.Connection, seed: Seed, first: int = 0) -> None:
    """COPY sessions ``first`` .. ``seed.sessions - 1`` with their events and reports."""
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),  # binary jsonb: a version byte, then the JSON text
        decoder=lambda data: data[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )
    indexes = range(first, seed.sessions)
    await conn.copy_records_to_table(
        "sessions", records=[session_row(seed, i) for i in indexes], columns=SESSION_COLUMNS
    )
    if seed.events:
        events = [row for i in indexes for row in event_rows(seed, i)]
        for start in range(0, len(events), 50_000):
            await conn.copy_records_to_table(
                "hook_audit_log", records=events[start : start + 50_000], columns=EVENT_COLUMNS
            )
    if seed.reports:
        await conn.copy_records_to_table(
            "reports", records=[report_row(seed, i) for i in indexes], columns=REPORT_COLUMNS
        )
    await summary.fill(conn, seed.tenant)  # COPY bypasses the projection that keeps the dashboard's summary
