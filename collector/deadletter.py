"""Dead letters: events PostgreSQL refused as data, kept with the error and their original bytes.

One JSON object per line in ``<state_dir>/deadletter/deadletter.jsonl``, fsynced before the events
count as delivered; ``hookdb deadletter list`` shows them and ``replay`` sends them again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from hookdb.collector.events import Peer

FILE = "deadletter.jsonl"


class DeadLetter(msgspec.Struct, kw_only=True):
    dead_at: datetime
    error: str
    sqlstate: str | None
    received_at: datetime
    peer: Peer | None
    event_id: str | None
    event_type: str | None
    session_id: str | None
    envelope: bytes
    """The frame body exactly as the client sent it (base64 in the file)."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def directory(state_dir: Path) -> Path:
    return state_dir / "deadletter"


def append(state_dir: Path, letters: list[DeadLetter]) -> None:
    """Append and fsync (blocking: run in a thread)."""
    folder = directory(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data = b"".join(_encode(letter) + b"\n" for letter in letters)
    fd = os.open(folder / FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> Iterator[DeadLetter | str]:
    """Every dead letter of a file; a line that cannot be read is yielded as a message saying so."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield _decode(line)
            except msgspec.MsgspecError as exc:
                yield f"{path}:{number}: unreadable dead letter: {exc}"
