"""Every metric the collector exports, defined once (Prometheus naming: ``hookdb_`` prefix, base units)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hookdb.client.wire import RejectReason

REGISTRY = CollectorRegistry(auto_describe=True)

events_received = Counter(
    "hookdb_events_received_total", "Frames decoded into valid events.", registry=REGISTRY
)
events_rejected = Counter(
    "hookdb_events_rejected_total", "Frames refused, by reason.", ["reason"], registry=REGISTRY
)
events_persisted = Counter(
    "hookdb_events_persisted_total", "Events committed to PostgreSQL as new rows.", registry=REGISTRY
)
events_duplicate = Counter(
    "hookdb_events_duplicate_total", "Events committed whose event id was already stored.", registry=REGISTRY
)
batches = Counter("hookdb_batches_total", "Batches committed to PostgreSQL.", registry=REGISTRY)
batch_size = Histogram(
    "hookdb_batch_size_events",
    "Events per committed batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
    registry=REGISTRY,
)
copy_seconds = Histogram(
    "hookdb_copy_duration_seconds",
    "Time to COPY and commit one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
db_errors = Counter(
    "hookdb_db_errors_total", "Failed batch writes, by SQLSTATE class.", ["sqlstate_class"], registry=REGISTRY
)
outbox_files = Gauge("hookdb_outbox_files", "Client outbox files waiting to be drained.", registry=REGISTRY)
dead_letters = Counter(
    "hookdb_dead_letters_total",
    "Events PostgreSQL refused as data, moved to the dead-letter file.",
    registry=REGISTRY,
)
breaker_state = Gauge(
    "hookdb_breaker_state", "Write circuit breaker: 0 closed, 1 half-open, 2 open.", registry=REGISTRY
)
breaker_transitions = Counter(
    "hookdb_breaker_transitions_total",
    "Breaker state changes.",
    ["from_state", "to_state"],
    registry=REGISTRY,
)
connections_open = Gauge("hookdb_client_connections", "Open client connections.", registry=REGISTRY)

for _reason in get_args(RejectReason):
    events_rejected.labels(_reason)
