"""Schema set-up for installs where the services must not own the schema.

Production runs the services with a DML-only database role (`HS_MIGRATE_ON_START=false`) and
migrates from a Job that connects as the schema-owning role:

    DATABASE_URL=<owner url> python -m services.common.db.migrate --grant-dml headshots_app

That applies every service's migrations (keyring first), then grants the DML role what the
services need and nothing more: USAGE on each schema, SELECT/INSERT/UPDATE/DELETE on its
tables (present and future), USAGE/SELECT on its sequences, read-only on the version tables.
`--check` only reports whether every schema is at this code's head (exit 1 if not).

Services call `prepare_schemas(settings, url, *schemas)` at start: it migrates when
`migrate_on_start` is on, and otherwise waits for the Job to have brought each schema to this
code's head (or past it: a newer release's expand-only migrations), so a pod never runs
against a schema older than its code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

from services.common.db import engine as db
from services.common.db.naming import (
    SERVICES_DIR,
    check_service_name,
    migrations_dir,
    normalize_url,
)
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

# The keyring's tables are referenced by the blob store of every service: migrated first.
FIRST = ("keyring",)
_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SchemaNotReady(RuntimeError):
    """A schema is missing or older than this code's head and may not be migrated here."""


def all_schemas() -> list[str]:
    """Every service schema with a migration tree, keyring first."""
    found = sorted(p.parent.parent.name for p in SERVICES_DIR.glob("*/migrations/env.py"))
    shared = [s for s in FIRST if (migrations_dir(s) / "env.py").is_file()]
    return shared + [s for s in found if s not in shared]


def _script(schema: str) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    from services.common.db.migrations import alembic_config

    tree = migrations_dir(schema)
    return ScriptDirectory.from_config(alembic_config(tree, url="", service=schema))


def head_of(schema: str) -> set[str]:
    return set(_script(schema).get_heads())


def known_revisions(schema: str) -> set[str]:
    return {r.revision for r in _script(schema).walk_revisions()}


async def current_revisions(url: str, schema: str) -> set[str] | None:
    """Revisions recorded in `<schema>.alembic_version`, or None when the table is absent."""
    check_service_name(schema)
    engine = create_async_engine(normalize_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{schema}.alembic_version"}
            )
            if not exists:
                return None
            table = f'"{schema}".alembic_version'
            rows = await conn.execute(sa.text(f"SELECT version_num FROM {table}"))
            return {r[0] for r in rows}
    finally:
        await engine.dispose()


async def schema_problem(url: str, schema: str) -> str | None:
    """Why this code cannot run on `schema` yet, or None when it can."""
    current = await current_revisions(url, schema)
    if not current:
        return f"schema {schema!r} has no migrations applied"
    head = head_of(schema)
    if current == head:
        return None
    if current - known_revisions(schema):
        return None  # ahead of this code: a newer release migrated (expand-only) already
    return f"schema {schema!r} is at {sorted(current)}, this code needs {sorted(head)}"


async def wait_for_schemas(url: str, schemas: list[str], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        problems = [p for s in schemas if (p := await schema_problem(url, s))]
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise SchemaNotReady(
                "; ".join(problems) + " (HS_MIGRATE_ON_START is off: run the migrations Job)"
            )
        log.warning("waiting for the migrations Job: %s", "; ".join(problems))
        await asyncio.sleep(5.0)


async def prepare_schemas(
    settings: ServiceSettings, url: str, *schemas: str, wait_s: float = 300.0
) -> None:
    """At service start: migrate `schemas` (keyring first), or wait for the Job to have."""
    ordered = [s for s in FIRST if s in schemas] + [s for s in schemas if s not in FIRST]
    if settings.migrate_on_start:
        for schema in ordered:
            await db.migrate(url, schema)
    else:
        await wait_for_schemas(url, ordered, timeout_s=wait_s)


async def grant_dml(url: str, role: str, schemas: list[str]) -> None:
    """Give `role` data access to `schemas` and no DDL (run as the schemas' owner)."""
    if not _ROLE_RE.match(role):
        raise ValueError(f"not a plain role name: {role!r}")
    engine = create_async_engine(normalize_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for schema in schemas:
                check_service_name(schema)
                q = f'"{schema}"'
                for stmt in (
                    f"GRANT USAGE ON SCHEMA {q} TO {role}",
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {q} TO {role}",
                    f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {q} TO {role}",
                    # Tables a later migration creates (as this same owner) are covered too.
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} "
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
                    f"ALTER DEFAULT PRIVILEGES IN SCHEMA {q} "
                    f"GRANT USAGE, SELECT ON SEQUENCES TO {role}",
                    # Services read their version table (prepare_schemas) but never move it.
                    f"REVOKE INSERT, UPDATE, DELETE ON {q}.alembic_version FROM {role}",
                ):
                    await conn.execute(sa.text(stmt))
    finally:
        await engine.dispose()


async def run(url: str, *, grant_to: str | None, check: bool) -> int:
    schemas = all_schemas()
    if check:
        problems = [p for s in schemas if (p := await schema_problem(url, s))]
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    for schema in schemas:
        await db.migrate(url, schema)
        print(f"migrated {schema} to {sorted(head_of(schema))}")
    if grant_to:
        await grant_dml(url, grant_to, schemas)
        print(f"granted DML on {', '.join(schemas)} to {grant_to}")
    return 0


def main(argv: list[str] | None = None) -> int:
    prog = "python -m services.common.db.migrate"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--grant-dml", metavar="ROLE", help="role the services connect as")
    parser.add_argument("--check", action="store_true", help="only check every schema is at head")
    args = parser.parse_args(argv)
    settings = ServiceSettings(service_name="migrate")
    if not settings.database_url:
        parser.error("DATABASE_URL (the schema-owning role's URL) is required")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return asyncio.run(run(settings.database_url, grant_to=args.grant_dml, check=args.check))


if __name__ == "__main__":
    sys.exit(main())
