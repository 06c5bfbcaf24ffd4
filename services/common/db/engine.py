"""PostgreSQL access for every service: engine, sessions, migrations, compare-and-set.

Ownership rule: **each service owns exactly one PostgreSQL schema, named after it**
(`gateway`, `filter`, `retention`, `trainer`, `generator`, `keyring`). Its tables live there,
its Alembic history lives in `services/<service>/migrations/` and its version table is
`<service>.alembic_version`, so the services' histories never collide and a service's
migrations touch nothing outside its schema. The only cross-schema writer by design is the
retention service's erasure (see docs/PLATFORM.md).

State changes that a redelivered job may repeat go through `compare_and_set`, which updates a
row only if its `version` column still holds the value the caller read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from services.common.db.naming import check_service_name, migrations_dir, normalize_url

if TYPE_CHECKING:
    from services.common.settings import ServiceSettings


def create_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5, **kw: Any) -> AsyncEngine:
    """An asyncpg engine sized for one small service process.

    `pool_pre_ping` drops connections the server closed (restarts, idle timeouts) before a
    request gets them; `pool_recycle` keeps connections younger than typical proxy timeouts.
    """
    return _create_async_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        **kw,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after commit without a lazy reload,
    # which an async session cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


async def migrate(url: str, service: str, *, directory: Path | str | None = None) -> None:
    """`alembic upgrade head` for `services/<service>/migrations/` (or `directory`).

    The version table is `<service>.alembic_version`; the schema is created if missing. The
    whole upgrade runs in one transaction under an advisory lock, so replicas starting at
    once apply each revision exactly once, and running it again is a no-op.

    Alembic's API is synchronous and its async env calls `asyncio.run`, which cannot nest in
    a running loop, so the upgrade runs in a worker thread with its own loop and engine.
    """
    check_service_name(service)
    tree = Path(directory) if directory is not None else migrations_dir(service)
    if not (tree / "env.py").is_file():
        raise FileNotFoundError(f"no Alembic tree for service {service!r}: {tree}/env.py missing")
    await asyncio.to_thread(_upgrade_head, normalize_url(url), service, tree)


# `alembic.context` and `alembic.op` are module-global proxies: two upgrades running in
# threads of one process would clobber each other, so they take turns. (Other processes are
# serialised by the advisory lock in migrations_env.)
_ALEMBIC_LOCK = threading.Lock()


def _upgrade_head(url: str, service: str, tree: Path) -> None:
    from alembic import command

    from services.common.db.migrations import alembic_config

    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(tree, url=url, service=service), "head")


async def compare_and_set(
    session: AsyncSession,
    table: sa.Table | str,
    where: Mapping[str, Any],
    expected_version: int,
    values: Mapping[str, Any],
) -> bool:
    """`UPDATE table SET values, version = version + 1 WHERE where AND version = expected`.

    Returns True when a row changed; False means another writer got there first (or the row
    is gone) and the caller should re-read. Runs in the caller's transaction: commit is theirs.
    `table` is a Table or a "schema.table" name.
    """
    if not where:
        raise ValueError("compare_and_set needs a non-empty `where` (it updates one row)")
    if not values:
        raise ValueError("compare_and_set needs at least one value to set")
    if "version" in values:
        raise ValueError("compare_and_set bumps `version` itself; do not pass it in values")
    tbl = _table(table, [*where, *values, "version"])
    stmt = (
        sa.update(tbl)
        .where(*(tbl.c[k] == v for k, v in where.items()), tbl.c.version == expected_version)
        .values({**values, "version": tbl.c.version + 1})
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _table(table: sa.Table | str, columns: list[str]) -> sa.TableClause:
    if isinstance(table, sa.Table):
        missing = [c for c in columns if c not in table.c]
        if missing:
            raise ValueError(f"table {table.fullname} has no column(s) {missing}")
        return table
    schema, _, name = table.rpartition(".")
    return sa.table(name, *(sa.column(c) for c in dict.fromkeys(columns)), schema=schema or None)


def database_url(settings: ServiceSettings) -> str:
    """The asyncpg URL of `DATABASE_URL`. A service never starts a database of its own: the
    embedded stack and the tests start one explicitly and pass its URL."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set: point it at the platform's PostgreSQL")
    return normalize_url(settings.database_url)
