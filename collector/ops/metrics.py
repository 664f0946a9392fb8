"""Every metric the collector exports, defined once (Prometheus naming: ``hookdb_`` prefix, base units)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hookdb.client.wire import REJECT_REASONS

if TYPE_CHECKING:
    from hookdb.collector.spool.segments import Spool

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
commit_latency = Histogram(
    "hookdb_event_commit_latency_seconds",
    "From the collector receiving an event to the commit of the batch that holds it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
spool_pending_records = Gauge(
    "hookdb_spool_pending_records", "Events in the spool not yet delivered.", registry=REGISTRY
)
spool_pending_bytes = Gauge("hookdb_spool_pending_bytes", "Spool bytes not yet delivered.", registry=REGISTRY)
spool_oldest_pending_age = Gauge(
    "hookdb_spool_oldest_pending_age_seconds",
    "Age of the oldest event not yet delivered (0 when none is pending).",
    registry=REGISTRY,
)
search_deferring = Gauge(
    "hookdb_search_deferring",
    "1 while batches defer their search documents (the spool is behind: search.defer_backlog_events).",
    registry=REGISTRY,
)
spool_full = Gauge(
    "hookdb_spool_full",
    "1 while clients are not read because the spool is at its size cap.",
    registry=REGISTRY,
)
spool_disk_full = Counter(
    "hookdb_spool_disk_full_total",
    "Times the spool's file system (or quota) was found full (ENOSPC, EDQUOT): appends wait and retry, "
    "clients use their outbox meanwhile; counted once per episode.",
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
delivery_processes = Gauge(
    "hookdb_delivery_processes",
    "Delivery processes running that have reported (database.delivery_processes; 0 when delivery runs in the "
    "collector's own process).",
    registry=REGISTRY,
)
delivery_process_restarts = Counter(
    "hookdb_delivery_process_restarts_total",
    "Delivery processes started again: after one died, or was killed for not reporting (hung).",
    ["reason"],
    registry=REGISTRY,
)
report_hash_mismatches = Counter(
    "hookdb_report_hash_mismatches_total",
    "Reports whose content did not read back from PostgreSQL with the hash that was written.",
    registry=REGISTRY,
)
search_deferred = Counter(
    "hookdb_search_deferred_events_total",
    "Searchable events stored while delivery was behind (search.defer_backlog_events): their search "
    "documents queued in search_backlog, to be made when a writer is idle.",
    registry=REGISTRY,
)
search_indexed = Counter(
    "hookdb_search_indexed_events_total",
    "Events of search_backlog whose search documents were made (by this collector; any may make any).",
    registry=REGISTRY,
)
search_refused = Counter(
    "hookdb_search_backlog_refused_total",
    "search_backlog rows dropped because PostgreSQL refused their documents as data (logged): their "
    "events are stored, not searchable.",
    registry=REGISTRY,
)
connections_open = Gauge("hookdb_client_connections", "Open client connections.", registry=REGISTRY)
connections_refused = Counter(
    "hookdb_client_connections_refused_total",
    "Client connections refused on accept, by reason (uid_cap: the uid held max_connections_per_uid).",
    ["reason"],
    registry=REGISTRY,
)
connection_failures = Counter(
    "hookdb_client_connection_failures_total",
    "Client connections closed because handling them raised an unexpected error (logged with the peer).",
    registry=REGISTRY,
)
accept_retries = Counter(
    "hookdb_accept_retries_total",
    "Accepts on the Unix socket that failed for want of file descriptors or memory and were retried.",
    registry=REGISTRY,
)
usage_tokens = Counter(
    "hookdb_usage_tokens_total",
    "Tokens of model API requests when first recorded in the usage ledger, by model, kind (input, output, "
    "cache_read, cache_creation_5m, cache_creation_1h) and the sources that first saw them.",
    ["model", "kind", "source"],
    registry=REGISTRY,
)
usage_cost = Counter(
    "hookdb_usage_cost_usd_total",
    "US dollars of model API requests when first recorded in the usage ledger (those of known cost), by "
    "model and the sources that first saw them.",
    ["model", "source"],
    registry=REGISTRY,
)

for _reason in REJECT_REASONS:
    events_rejected.labels(_reason)
connections_refused.labels("uid_cap")


def refresh(spool: Spool, oldest_pending_ns: int | None, search_deferring_now: bool) -> None:
    """Bring the gauges that mirror state up to date (called on each scrape)."""
    search_deferring.set(1 if search_deferring_now else 0)
    spool_pending_records.set(spool.pending_records)
    spool_pending_bytes.set(spool.pending_bytes)
    spool_full.set(1 if spool.full else 0)
    age = (
        0.0
        if not spool.pending_records or oldest_pending_ns is None
        else time.time() - oldest_pending_ns / 1e9
    )
    spool_oldest_pending_age.set(max(age, 0.0))


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """Observe each of ``amounts`` as ``histogram.observe`` would, one lock per bucket touched rather than two
    per value: ``observe`` costs about a microsecond, and per-event histograms take a batch's events at once.
    Reaches into the (unlabelled) histogram's buckets; tests/test_metrics.py checks that it matches."""
    bounds = histogram._upper_bounds  # the last one is +Inf: every amount has its bucket
    histogram._sum.inc(sum(amounts))
    for bucket, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
        histogram._buckets[bucket].inc(count)


# -- Delivery processes ------------------------------------------------------------------------------------
# A delivery process (delivery/processes.py) counts in its own copy of these metrics; what it counted since
# its last report is added to the collector's, so /metrics shows one collector however delivery is spread.
# Counters and histograms only: the gauges mirror state the collector itself holds.

_COUNTED = {m._name: m for m in list(globals().values()) if isinstance(m, Counter | Histogram)}


class Delta(NamedTuple):
    """What one counter, or one part of a histogram, went up by."""

    metric: str  # its name, as registered
    labels: tuple[str, ...]  # its label values, in its label names' order
    part: int  # -1 for a counter; a histogram's bucket (its index), or the number of buckets for the sum
    amount: float


Readings = dict[tuple[str, tuple[str, ...], int], float]


def readings() -> Readings:
    """Every counter's and histogram's values in this process, by (metric, labels, part)."""
    out: Readings = {}
    for name, metric in _COUNTED.items():
        children = metric._metrics.items() if metric._labelnames else [((), metric)]
        for labels, child in list(children):
            if isinstance(child, Histogram):
                for part, bucket in enumerate(child._buckets):
                    out[(name, labels, part)] = bucket.get()
                out[(name, labels, len(child._buckets))] = child._sum.get()
            else:
                out[(name, labels, -1)] = child._value.get()
    return out


def changes(before: Readings, now: Readings) -> list[Delta]:
    """What went up from ``before`` to ``now``."""
    return [
        Delta(name, labels, part, value - before.get((name, labels, part), 0.0))
        for (name, labels, part), value in now.items()
        if value != before.get((name, labels, part), 0.0)
    ]


def add(deltas: Sequence[Delta]) -> None:
    """Add what a delivery process counted to this process's metrics."""
    for delta in deltas:
        metric = _COUNTED[delta.metric]
        child = metric.labels(*delta.labels) if delta.labels else metric
        if isinstance(child, Histogram):
            value = child._sum if delta.part == len(child._buckets) else child._buckets[delta.part]
            value.inc(delta.amount)
        else:
            child.inc(delta.amount)
