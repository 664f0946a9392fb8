"""hookdb's collector: the daemon that takes hook events off a Unix socket and writes them to PostgreSQL.

The data's way, one module a step: ``listener`` → ``events`` → ``batcher`` → ``sink`` (PostgreSQL),
run together by ``daemon``.
"""
