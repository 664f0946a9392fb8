"""The read API and web page (``hookdb api``): a tenant's session history, live, over HTTP.

``models`` (what goes over the wire) → ``cursor`` (opaque page positions) → ``queries`` (SQL) →
``reader`` (pooled, tenant-scoped read-only transactions) → ``feed`` (LISTEN/NOTIFY fan-out) → ``app``
(routes, auth, errors) → ``openapi`` → ``server`` (hypercorn on trio).
"""
