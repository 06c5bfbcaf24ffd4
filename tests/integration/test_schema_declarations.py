"""Each schema has one declaration, its table module; a migrated database must match it.

A fresh database is created from the declarations (the baseline revisions call them), so the
check that matters is the other path: a database the first release created
(tests/fixtures/schemas/release-0001.sql), migrated to head, must be what the table modules
declare. Alembic's own comparison (the one behind `--autogenerate`) finds a column, type,
nullability, index or constraint declared without a revision that brings it, or the reverse.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from devstack.embedded import Postgres
from services.common.db import engine as db
from services.common.keys import keyring
from services.filter import tables as filter_tables
from services.gateway import tables as gateway_tables
from services.retention import tables as retention_tables

pytestmark = pytest.mark.integration
RELEASE_0001 = Path(__file__).resolve().parents[1] / "fixtures" / "schemas" / "release-0001.sql"

DECLARED = {
    "keyring": keyring.metadata,
    "gateway": gateway_tables.metadata,
    "filter": filter_tables.metadata,
    "retention": retention_tables.metadata,
}


def _differences(connection: sa.Connection, schema: str, metadata: sa.MetaData) -> list:
    def in_schema(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "table":
            return getattr(obj, "schema", None) == schema and name != "alembic_version"
        return True

    ctx = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_object": in_schema,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return compare_metadata(ctx, metadata)


async def _compare_all(url: str) -> dict[str, list]:
    engine = db.create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                schema: await conn.run_sync(_differences, schema, metadata)
                for schema, metadata in DECLARED.items()
            }
    finally:
        await engine.dispose()


async def test_a_fresh_database_is_what_the_table_modules_declare(postgres) -> None:
    for schema in DECLARED:
        await db.migrate(postgres.url, schema)
    assert await _compare_all(postgres.url) == {schema: [] for schema in DECLARED}


async def test_a_first_release_database_migrated_to_head_is_what_they_declare(tmp_path) -> None:
    pg = Postgres(tmp_path / "release").start()
    try:
        # 1. The database as the first release left it, at revision 0001 everywhere.
        engine = db.create_engine(pg.url)
        async with engine.begin() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(RELEASE_0001.read_text())
            for schema in DECLARED:
                await conn.execute(sa.text(f"INSERT INTO {schema}.alembic_version VALUES ('0001')"))
        await engine.dispose()
        # 2. Every later revision.
        for schema in DECLARED:
            await db.migrate(pg.url, schema)
        # 3. What the code declares.
        assert await _compare_all(pg.url) == {schema: [] for schema in DECLARED}
    finally:
        pg.stop()
