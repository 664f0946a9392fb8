"""Intake: where events enter — the Unix socket listener, HTTP hooks and the outbox drainer.

Every source admits frames by the same rules (``admission``, ``tenancy``) and appends them to the spool.
"""
