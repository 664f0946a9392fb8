"""Operating the daemon: every metric (``metrics``), the health endpoints, structured logs, systemd."""
