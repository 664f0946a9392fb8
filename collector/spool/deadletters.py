"""Dead letters: events PostgreSQL refused as data, kept with the error and their original bytes.

One JSON object per line in ``<state_dir>/deadletter/deadletter.jsonl``, fsynced before the events
count as delivered; ``hookdb deadletter list`` shows them and ``replay`` sends them again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec

from hookdb.collector.spool.entry import Peer

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


def pending_files(state_dir: Path) -> list[Path]:
    """Dead-letter files to read or replay: the live one and any replay that was interrupted."""
    folder = directory(state_dir)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("replaying-*.jsonl")) + ([folder / FILE] if (folder / FILE).exists() else [])


def replay(state_dir: Path, socket_path: str, timeout: float = 5.0) -> tuple[int, list[str]]:
    """Send every dead letter to the collector again; return how many it took and what went wrong.

    The live file is first renamed, so events dead-lettered meanwhile start a new one; letters the
    collector does not take are appended back. Blocking.
    """
    from hookdb.client.protocol import Envelope
    from hookdb.client.transport import Refused, await_reply, connect
    from hookdb.client.wire import frame

    folder = directory(state_dir)
    live = folder / FILE
    if live.exists():
        live.rename(folder / f"replaying-{time.time_ns()}.jsonl")
    sent = 0
    problems: list[str] = []
    keep: list[DeadLetter] = []
    sock = None
    try:
        for path in sorted(folder.glob("replaying-*.jsonl")):
            for letter in read(path):
                if isinstance(letter, str):
                    problems.append(letter)
                    continue
                try:
                    envelope = msgspec.msgpack.decode(letter.envelope, type=Envelope)
                    envelope.ack = True
                    if sock is None:
                        sock = connect(socket_path, timeout)
                    sock.sendall(frame(msgspec.msgpack.encode(envelope)))
                    await_reply(sock, str(envelope.event_id), time.monotonic() + timeout)
                    sent += 1
                except (msgspec.MsgspecError, Refused, OSError) as exc:
                    problems.append(f"{letter.event_id}: {exc}")
                    keep.append(letter)
                    if sock is not None and not isinstance(exc, msgspec.MsgspecError):
                        sock.close()
                        sock = None
            if keep:
                append(state_dir, keep)
                keep = []
            path.unlink()
    finally:
        if sock is not None:
            sock.close()
    return sent, problems
