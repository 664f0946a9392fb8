"""``Emitter``: record hook events from inside an agent process, never slowing or breaking it."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import msgspec

from hookdb.client.paths import default_socket_path
from hookdb.client.transport import connect
from hookdb.client.wire import encode_envelope, frame, new_event_id

log = logging.getLogger("hookdb.client")


class Emitter:
    """Sends events to the collector over one lazily (re)connected Unix socket connection.

    ``emit`` is synchronous and safe from threads, asyncio and trio alike: it never raises and never
    blocks longer than ``timeout`` seconds (a stuck collector costs the caller at most that, once per
    event). Events that cannot be sent are counted in ``dropped`` and logged once per outage.
    """

    def __init__(
        self, socket_path: str | None = None, *, tenant: str | None = None, timeout: float = 0.1
    ) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.tenant = tenant
        self.timeout = timeout
        self.dropped = 0
        self._down = False  # an outage is logged when it starts and when it ends, not per event
        self._sock: Any = None
        self._lock = threading.Lock()
        self._encode_payload = msgspec.json.Encoder().encode

    def emit(
        self, event_type: str, payload: Any, *, session_id: str | None = None, source: str = "app"
    ) -> uuid.UUID:
        """Send one event; return its id (also when it could not be sent)."""
        event_id = new_event_id()
        try:
            data = frame(
                encode_envelope(
                    event_id=event_id,
                    occurred_at_ns=time.time_ns(),
                    source=source,
                    event_type=event_type,
                    session_id=session_id,
                    tenant=self.tenant,
                    payload=self._encode_payload(payload),
                )
            )
            with self._lock:
                self._send(data)
        except Exception as exc:
            self._dropped(exc)
        return uuid.UUID(event_id)

    def _send(self, data: bytes) -> None:
        """Send on the open connection; on failure reconnect once and resend the whole frame.

        A resent frame may arrive twice; the collector stores each event id once.
        """
        for attempt in (1, 2):
            if self._sock is None:
                self._sock = connect(self.socket_path, self.timeout)
                if self._down:
                    self._down = False
                    log.warning("hookdb collector reachable again at %s", self.socket_path)
            try:
                self._sock.sendall(data)
            except OSError:
                self._close()
                if attempt == 2:
                    raise
            else:
                return

    def _dropped(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            log.warning("hookdb events not sent to %s: %s", self.socket_path, exc)
        self.dropped += 1
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection; a later ``emit`` reconnects."""
        with self._lock:
            self._close()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
