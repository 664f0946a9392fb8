"""``Emitter``: record hook events from inside an agent process, never slowing or breaking it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import msgspec

from hookdb.client.outbox import OutboxFile
from hookdb.client.oversize import shrink
from hookdb.client.paths import default_socket_path, outbox_dir
from hookdb.client.transport import Refused, Unresponsive, await_reply, connect, send
from hookdb.client.wire import DEFAULT_MAX_FRAME_BYTES, encode_envelope, frame, new_event_id

log = logging.getLogger("hookdb.client")


class Emitter:
    """Sends events to the collector over one lazily (re)connected Unix socket connection.

    ``emit`` is synchronous and safe from threads, asyncio and trio alike: it never raises and never
    blocks much longer than ``timeout`` seconds. An event the collector cannot take (socket missing,
    refusing, stuck, or — with ``ack=True`` — no ack in time) goes to the outbox, which the collector
    drains when it is back. With ``ack=True`` each ``emit`` returns only once the event is in the
    collector's spool or in the outbox. After a time-out, the next sends (of this and every other client of
    the outbox directory) only probe briefly until an ack comes back in time: a hung collector costs one
    time-out, not one per event.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        tenant: str | None = None,
        timeout: float = 0.1,
        ack: bool = False,
        outbox: str | None = None,
    ) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.outbox_dir = outbox or outbox_dir(self.socket_path)
        self.tenant = tenant
        self.timeout = timeout
        self.ack = ack
        self.sent = 0
        self.outboxed = 0
        self.lost = 0
        self._sock: Any = None
        self._outbox: OutboxFile | None = None
        self._unresponsive = Unresponsive(self.outbox_dir)
        self._lock = threading.Lock()
        self._encode_payload = msgspec.json.Encoder().encode

    def emit(
        self, event_type: str, payload: Any, *, session_id: str | None = None, source: str = "app"
    ) -> uuid.UUID:
        """Record one event; return its id."""
        event_id = new_event_id()
        occurred_at_ns = time.time_ns()

        def envelope(data: bytes) -> bytes:
            return encode_envelope(
                event_id=event_id,
                occurred_at_ns=occurred_at_ns,
                source=source,
                event_type=event_type,
                session_id=session_id,
                tenant=self.tenant,
                payload=data,
                ack=self.ack,
            )

        try:
            data = self._encode_payload(payload)
            body = envelope(data)
            if len(body) > DEFAULT_MAX_FRAME_BYTES:  # too big for any collector: its largest strings give way
                body = envelope(shrink(data, DEFAULT_MAX_FRAME_BYTES - (len(body) - len(data))))
        except Exception as exc:
            self._lose(exc)
            return uuid.UUID(event_id)
        with self._lock:
            try:
                self._send(frame(body), event_id)
            except Refused as exc:
                self._lose(exc)
            except OSError as exc:
                self._to_outbox(body, exc)
            else:
                self.sent += 1
                self._release_outbox()
        return uuid.UUID(event_id)

    def _send(self, data: bytes, event_id: str) -> None:
        """Send on the open connection; on failure reconnect once and resend the whole frame.

        A resent frame may arrive twice; the collector stores each event id once.
        """
        timeout = self._unresponsive.timeout(self.timeout)
        for attempt in (1, 2):
            deadline = time.monotonic() + timeout
            try:
                if self._sock is None:
                    self._sock = connect(self.socket_path, timeout)
                self._sock.settimeout(timeout)
                send(self._sock, data)
                if self.ack:
                    await_reply(self._sock, event_id, deadline)
            except Refused:
                self._close()
                raise
            except OSError as exc:
                self._close()
                if attempt == 2 or time.monotonic() >= deadline:
                    if isinstance(exc, TimeoutError):
                        self._unresponsive.remember()
                    raise
            else:
                if self.ack:
                    self._unresponsive.forget()
                return

    def _to_outbox(self, body: bytes, exc: OSError) -> None:
        try:
            if self._outbox is None:
                self._outbox = OutboxFile(self.outbox_dir)
                log.warning(
                    "hookdb collector unreachable at %s (%s); events go to %s",
                    self.socket_path,
                    exc,
                    self._outbox.path,
                )
            self._outbox.append(body)
            self.outboxed += 1
        except OSError as outbox_exc:
            self._lose(outbox_exc)

    def _release_outbox(self) -> None:
        """The collector is back: hand the outbox file over to it."""
        if self._outbox is not None:
            outbox, self._outbox = self._outbox, None
            try:
                outbox.close()
            except OSError as exc:
                log.warning("hookdb outbox %s could not be synced: %s", outbox.path, exc)
            log.warning("hookdb collector reachable again at %s", self.socket_path)

    def _lose(self, exc: Exception) -> None:
        self.lost += 1
        log.warning("hookdb event lost: %s", exc)

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection and release any outbox file; a later ``emit`` starts afresh."""
        with self._lock:
            self._close()
            if self._outbox is not None:
                self._outbox.close()
                self._outbox = None

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
