"""Delivery: from the spool to the store — batches (``batcher``), guarded by the circuit ``breaker``,
written exactly once by the ``pipeline``."""
