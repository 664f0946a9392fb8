"""Delivery: from the spool to the store — batches (``batcher``), guarded by the circuit ``breaker``,
written exactly once by the ``pipeline``; on more cores by delivery ``processes``, whose ``crashes`` cost
only the record at fault."""
