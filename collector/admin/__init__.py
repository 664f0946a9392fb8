"""Admin and offline tools, apart from the daemon: spool and dead-letter reports, backfill of past
sessions, and ``install-hooks`` for Claude Code."""
