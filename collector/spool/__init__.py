"""The spool: the durable buffer between intake and delivery (``segments`` of ``entry`` records), and
the dead letters, the events PostgreSQL refused."""
