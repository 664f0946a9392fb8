"""The Citus path: every tenant table can be distributed by ``tenant_id``.

Citus requires the distribution column in every primary key and unique index of a distributed table, and
foreign keys between distributed tables must include it too. ``schema_migrations`` is the one table
without tenants: under Citus it stays a local table on the coordinator.
"""

from __future__ import annotations

from conftest import migrate, run_sql

LOCAL_TABLES = {"schema_migrations"}


def test_every_key_and_unique_index_includes_tenant_id(dsn: str) -> None:
    migrate(dsn)
    tables = {
        r["relname"]
        for r in run_sql(
            dsn,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
        )
    }
    assert tables - LOCAL_TABLES, "no tenant tables found"
    for table in sorted(tables - LOCAL_TABLES):
        columns = {
            r["attname"]
            for r in run_sql(
                dsn, f"SELECT attname FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attnum > 0"
            )
        }
        assert "tenant_id" in columns, f"{table} has no tenant_id"
        keys = run_sql(
            dsn,
            "SELECT i.indexrelid::regclass::text AS name, i.indisprimary, "
            "array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a "
            "      ON a.attrelid = i.indrelid AND a.attnum = k) AS columns "
            "FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique",
            table,
        )
        assert any(k["indisprimary"] for k in keys), f"{table} has no primary key"
        for key in keys:
            assert "tenant_id" in key["columns"], f"{table}: unique index {key['name']} lacks tenant_id"
        for fk in run_sql(
            dsn,
            "SELECT conname, array(SELECT a.attname FROM unnest(conkey) k JOIN pg_attribute a "
            "       ON a.attrelid = conrelid AND a.attnum = k) AS columns "
            "FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'f'",
            table,
        ):
            assert "tenant_id" in fk["columns"], f"{table}: foreign key {fk['conname']} lacks tenant_id"
