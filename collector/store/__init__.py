"""The store: PostgreSQL — how to connect, the ``rows`` of ``hook_audit_log``, the ``sink`` that writes
them with their ``blobs`` and ``projections`` (with ``search`` documents, made later by
``search_backlog`` while delivery is behind), the schema's ``migrate``, ``partitions`` and ``retention``,
and the ``embedded`` server."""
