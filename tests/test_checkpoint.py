"""The spool checkpoint under two writers: it moves only over batches committed without a gap.

The unit tests drive ``checkpoint.Commits`` alone; the SIGKILL test holds one batch in PostgreSQL (a lock
on one of its rows) while the second writer commits the next, kills the collector, and checks that the
held batch is delivered after the restart.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
import pytest

from hookdb.client.wire import encode_envelope, frame, new_event_id
from hookdb.collector.delivery.checkpoint import Advance, Commits
from hookdb.collector.spool.segments import Position

from conftest import count_rows, run_sql, wait_for, wait_for_rows

T = TypeVar("T")


def issued(n: int) -> Commits:
    commits = Commits()
    assert [commits.issue() for _ in range(n)] == list(range(n))
    return commits


def test_batches_committed_in_order_move_the_checkpoint_each_time() -> None:
    commits = issued(2)
    assert commits.committed(0, Position(1, 100), 3) == Advance(Position(1, 100), 3)
    assert commits.committed(1, Position(1, 200), 2) == Advance(Position(1, 200), 2)


def test_a_batch_committed_ahead_waits_for_the_one_before_it() -> None:
    commits = issued(4)
    assert commits.committed(1, Position(1, 200), 2) is None  # batch 0 is still being written
    assert commits.committed(3, Position(2, 50), 1) is None
    assert commits.waiting == 2
    assert commits.committed(0, Position(1, 100), 3) == Advance(Position(1, 200), 5)  # 0 and 1 at once
    assert commits.committed(2, Position(2, 10), 4) == Advance(Position(2, 50), 5)  # 2 and 3
    assert commits.waiting == 0


def test_a_batch_cannot_be_committed_twice_or_before_it_is_made() -> None:
    commits = issued(1)
    commits.committed(0, Position(1, 100), 1)
    with pytest.raises(ValueError, match="not issued or is committed already"):
        commits.committed(0, Position(1, 100), 1)
    with pytest.raises(ValueError, match="not issued or is committed already"):
        commits.committed(1, Position(1, 200), 1)


# -- a real collector, two writers, SIGKILL ---------------------------------------------------------------


class Loop:
    """An asyncio loop in a thread, so the test can hold a transaction open while it does other things."""

    def __init__(self) -> None:
        self._loop = asyncio.SelectorEventLoop()  # a plain one, whatever policy trio_asyncio has set
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


def batch_of(n: int, at_ns: int) -> tuple[list[str], list[bytes]]:
    ids = [new_event_id() for _ in range(n)]
    frames = [
        frame(
            encode_envelope(
                event_id=i,
                occurred_at_ns=at_ns,
                source="app",
                event_type="Notification",
                session_id="s",
                tenant=None,
                payload=msgspec.json.encode({"seq": s}),
            )
        )
        for s, i in enumerate(ids)
    ]
    return ids, frames


def send(path: Path, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"".join(frames))


def test_a_batch_held_in_postgres_while_the_next_commits_is_delivered_after_sigkill(
    start_collector: Any, dsn: str, tmp_path: Path, loop: Loop
) -> None:
    """Batch A is held by a lock on one of its rows; batch B, after it in the spool, commits through the
    second writer; SIGKILL. Had B's commit moved the checkpoint past A, A would never be written."""
    extra = (
        "--set",
        "database.writers=2",
        "--set",
        "batch.max_events=10",
        "--set",
        "batch.linger_seconds=0.05",
    )
    collector = start_collector(*extra)
    at_ns = (time.time_ns() // 1000) * 1000  # microseconds: as the column stores it
    held_ids, held = batch_of(10, at_ns)
    next_ids, following = batch_of(10, at_ns)
    blocker = loop.run(asyncpg.connect(dsn))
    blocking = blocker.transaction()
    loop.run(blocking.start())
    # The same key as A's first event, not committed: A's INSERT waits for this transaction.
    loop.run(
        blocker.execute(
            "INSERT INTO hook_audit_log (tenant_id, event_id, occurred_at, received_at, event_type, source, "
            "payload) VALUES ('default', $1, $2, now(), 'Notification', 'app', '{}')",
            held_ids[0],
            datetime.fromtimestamp(at_ns / 1e9, UTC),
        )
    )
    try:
        send(tmp_path / "hookdb.sock", held)
        wait_for(
            lambda: run_sql(
                dsn,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hookdb-collector' "
                "AND wait_event_type = 'Lock'",
            )[0][0]
        )
        send(tmp_path / "hookdb.sock", following)
        wait_for(lambda: count_rows(dsn) == 10)  # B, by the other writer, while A waits
        stored = {str(r[0]) for r in run_sql(dsn, "SELECT event_id FROM hook_audit_log")}
        assert stored == set(next_ids)
        time.sleep(0.2)  # a wrong checkpoint would be on disk by now
        assert collector.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        loop.run(blocking.rollback())
        loop.run(blocker.close())
    start_collector(*extra)
    assert wait_for_rows(dsn, 20) == 20
    rows = run_sql(dsn, "SELECT event_id::text, count(*) FROM hook_audit_log GROUP BY 1")
    assert {r[0] for r in rows} == set(held_ids) | set(next_ids)
    assert all(r[1] == 1 for r in rows)
