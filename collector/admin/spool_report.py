"""``hookdb spool inspect|verify``: what the spool holds, read without changing anything.

Safe beside a running collector: it only reads, and a record being written as it reads shows as a
torn tail of the newest segment, which is reported but is not damage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from hookdb.client.records import Damage, Record
from hookdb.collector.spool.entry import received_at_ns
from hookdb.collector.spool.segments import (
    QUARANTINE,
    Position,
    list_segments,
    read_checkpoint,
    scan_segment,
)


class SegmentReport(msgspec.Struct):
    name: str
    bytes: int
    records: int
    pending_records: int
    damaged: list[tuple[int, int]]
    torn_tail: tuple[int, int] | None


class SpoolReport(msgspec.Struct):
    directory: str
    checkpoint: tuple[int, int]
    segments: list[SegmentReport]
    pending_records: int
    pending_bytes: int
    oldest_pending_age_seconds: float | None
    quarantined: list[str]

    @property
    def damaged(self) -> bool:
        return any(s.damaged for s in self.segments)


@dataclass
class _Scan:
    records: int = 0
    pending: int = 0
    pending_bytes: int = 0
    damaged: list[tuple[int, int]] = field(default_factory=list)
    tail: Damage | None = None


def inspect(directory: Path, max_record: int) -> SpoolReport:
    checkpoint = read_checkpoint(directory)
    found = list_segments(directory)
    segments = []
    pending = pending_bytes = 0
    oldest_ns: int | None = None
    for index, (seq, path) in enumerate(found):
        size = path.stat().st_size
        scan = _Scan()
        for item in scan_segment(path, max_record):
            if isinstance(item, Record):
                scan.records += 1
                if Position(seq, item.offset) >= checkpoint:
                    scan.pending += 1
                    scan.pending_bytes += item.end - item.offset
                    if oldest_ns is None:
                        oldest_ns = received_at_ns(item.body)
            elif item.end == size and index == len(found) - 1 and item.start > 0:
                scan.tail = item
            else:
                scan.damaged.append((item.start, item.end))
        pending += scan.pending
        pending_bytes += scan.pending_bytes
        segments.append(
            SegmentReport(
                path.name,
                size,
                scan.records,
                scan.pending,
                scan.damaged,
                (scan.tail.start, scan.tail.end) if scan.tail else None,
            )
        )
    quarantine = directory / QUARANTINE
    return SpoolReport(
        directory=str(directory),
        checkpoint=tuple(checkpoint),
        segments=segments,
        pending_records=pending,
        pending_bytes=pending_bytes,
        oldest_pending_age_seconds=None if oldest_ns is None else round(time.time() - oldest_ns / 1e9, 3),
        quarantined=sorted(p.name for p in quarantine.iterdir()) if quarantine.is_dir() else [],
    )


def render(report: SpoolReport) -> str:
    lines = [
        f"spool {report.directory}",
        f"  pending: {report.pending_records} records, {report.pending_bytes} bytes"
        + (
            f", oldest {report.oldest_pending_age_seconds:.1f} s old"
            if report.oldest_pending_age_seconds
            else ""
        ),
        f"  checkpoint: segment {report.checkpoint[0]}, offset {report.checkpoint[1]}",
    ]
    for s in report.segments:
        line = f"  {s.name}: {s.bytes} bytes, {s.records} records, {s.pending_records} pending"
        if s.torn_tail:
            line += f", torn tail at {s.torn_tail[0]} ({s.torn_tail[1] - s.torn_tail[0]} bytes)"
        lines.append(line)
        lines.extend(f"    DAMAGED bytes {start}..{end}" for start, end in s.damaged)
    if report.quarantined:
        lines.append(f"  quarantine: {', '.join(report.quarantined)}")
    return "\n".join(lines)
