"""hookdb's collector: the daemon that takes hook events in, keeps them durably and writes them to PostgreSQL.

An event's way, one subpackage a stage, run together by ``daemon``:

``intake`` (Unix socket, HTTP hooks, outbox drainer; admission and tenancy)
→ ``spool`` (the durable buffer, and the dead letters)
→ ``delivery`` (batcher, breaker, the pipeline that writes each batch exactly once)
→ ``store`` (PostgreSQL: rows, blobs, projections, migrations, partitions and retention)
→ ``api`` + ``web`` (``hookdb api``: session history).

Beside the way: ``ops`` (metrics, health, logs, systemd), ``admin`` (offline and admin tools: spool and
dead-letter commands, backfill, install-hooks), and one module each for the ``config`` and the
``classification`` of events; ``cli`` is the ``hookdb`` command.
"""
