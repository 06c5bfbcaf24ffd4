"""Find and delete every row of an order, in every service's schema.

Each table has one owning service, but erasure must be provable in one place, so retention
is the one service allowed to delete an order's rows everywhere. Order-scoped tables are
found by convention (a column `order_id`), so a table added later by any service is covered
without anyone remembering to register it. Proof records are kept on purpose: the ledger,
the erasure request log, and the keyring's tombstone (which has no key material and stops
a late writer from creating a fresh key for an erased order).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

PROOF_TABLES = {("retention", "ledger"), ("retention", "erasures"), ("keyring", "data_keys")}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


async def order_tables(conn: AsyncConnection) -> list[tuple[str, str, bool]]:
    """(schema, table, has_tenant_id) for every table with an `order_id` column."""
    rows = await conn.execute(
        sa.text(
            """
            SELECT c.table_schema, c.table_name,
                   bool_or(t.column_name = 'tenant_id') AS has_tenant
            FROM information_schema.columns c
            JOIN information_schema.columns t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            JOIN information_schema.tables tb
              ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
            WHERE c.column_name = 'order_id' AND tb.table_type = 'BASE TABLE'
              AND c.table_schema NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
            GROUP BY c.table_schema, c.table_name
            ORDER BY c.table_schema, c.table_name
            """
        )
    )
    return [(r[0], r[1], bool(r[2])) for r in rows if (r[0], r[1]) not in PROOF_TABLES]


async def delete_order_rows(conn: AsyncConnection, tenant_id: str, order_id: str) -> int:
    """Delete the order's rows everywhere; returns how many. Runs in the caller's transaction.

    Tables reference each other (results → orders), so a table whose delete is refused by a
    foreign key is retried after the others, inside a savepoint each time.
    """
    pending = await order_tables(conn)
    deleted = 0
    for _ in range(len(pending) + 1):
        if not pending:
            break
        refused = []
        for schema, table, has_tenant in pending:
            cond = "order_id = :o" + (" AND tenant_id = :t" if has_tenant else "")
            stmt = sa.text(f'DELETE FROM "{schema}"."{table}" WHERE {cond}')
            try:
                async with conn.begin_nested():
                    result = await conn.execute(stmt, {"o": order_id, "t": tenant_id})
                deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
            except IntegrityError:
                refused.append((schema, table, has_tenant))
        if len(refused) == len(pending):
            names = ", ".join(f"{s}.{t}" for s, t, _ in refused)
            raise RuntimeError(f"could not delete order rows (foreign keys): {names}")
        pending = refused
    return deleted


async def scan_for_order(conn: AsyncConnection, order_id: str) -> list[str]:
    """Every table (outside the proof records) holding a text value equal to or containing
    the order id: the verification a data-protection officer would run after an erasure."""
    cols = await conn.execute(
        sa.text(
            """
            SELECT table_schema, table_name, column_name
            FROM information_schema.columns
            WHERE data_type IN ('text', 'character varying', 'jsonb', 'json')
              AND table_schema NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
            """
        )
    )
    found = []
    for schema, table, column in cols:
        if (schema, table) in PROOF_TABLES:
            continue
        q = sa.text(f'SELECT count(*) FROM "{schema}"."{table}" WHERE "{column}"::text LIKE :pat')
        n = (await conn.execute(q, {"pat": f"%{order_id}%"})).scalar_one()
        if n:
            found.append(f"{schema}.{table}.{column} ({n})")
    return found
