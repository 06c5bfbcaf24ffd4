"""Migrations and compare-and-set against a real PostgreSQL (pgserver)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.embedded import Postgres
from services.common.db import engine as db
from services.common.db.migrations import scaffold
from services.common.settings import ServiceSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

WIDGETS_0001 = '''"""widgets"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "widgets",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        schema="{schema}",
    )


def downgrade() -> None:
    op.drop_table("widgets", schema="{schema}")
'''

WIDGETS_0002 = '''"""widgets.note"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("widgets", sa.Column("note", sa.Text), schema="{schema}")


def downgrade() -> None:
    op.drop_column("widgets", "note", schema="{schema}")
'''


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = Postgres(tmp_path_factory.mktemp("pg") / "data").start()
    yield server
    server.stop()


@pytest.fixture
async def url(pg: Postgres) -> str:
    """A fresh, empty database per test, on the shared server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = db.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return pg.url.replace("/postgres?", f"/{name}?")


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    eng = db.create_engine(url)
    yield eng
    await eng.dispose()


def _widgets_tree(root: Path, schema: str, *revisions: str) -> Path:
    tree = scaffold(schema, root=root)
    for number, text in enumerate(revisions, 1):
        (tree / "versions" / f"{number:04d}_widgets.py").write_text(text.format(schema=schema))
    return tree


async def _versions(engine: AsyncEngine, schema: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text(f"SELECT version_num FROM {schema}.alembic_version"))
        return [r[0] for r in rows]


async def test_keyring_migration_applies_to_empty_database_and_reruns_as_noop(
    url: str, engine: AsyncEngine
) -> None:
    await db.migrate(url, "keyring")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO keyring.data_keys (tenant_id, order_id, key_id, wrapped_key,"
                " master_key_id) VALUES ('t1', 'o1', gen_random_uuid(), '\\x00', 'm1')"
            )
        )
    await db.migrate(url, "keyring")  # no-op: nothing re-created, data kept
    assert await _versions(engine, "keyring") == ["0001"]
    async with engine.connect() as conn:
        count = await conn.scalar(sa.text("SELECT count(*) FROM keyring.data_keys"))
        # the version table sits in the service's own schema, not in public
        public = await conn.scalar(sa.text("SELECT to_regclass('public.alembic_version')"))
    assert count == 1 and public is None


async def test_a_new_service_tree_applies_only_revisions_it_has_not_seen(
    url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    tree = _widgets_tree(tmp_path / "widgets", "widgets", WIDGETS_0001)
    assert (tree / "env.py").read_text().count("\n") <= 6  # the two-line env
    await db.migrate(url, "widgets", directory=tree)
    assert await _versions(engine, "widgets") == ["0001"]

    (tree / "versions" / "0002_widgets.py").write_text(WIDGETS_0002.format(schema="widgets"))
    await db.migrate(url, "widgets", directory=tree)
    await db.migrate(url, "widgets", directory=tree)
    assert await _versions(engine, "widgets") == ["0002"]
    async with engine.connect() as conn:
        cols = await conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'widgets' AND table_name = 'widgets' ORDER BY 1"
            )
        )
        assert [c[0] for c in cols] == ["id", "note", "state", "version"]


async def test_replicas_migrating_at_once_apply_each_revision_once(
    url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Two other processes (the CLI) and two calls in this one, all at once."""
    # A slow first revision, so the others arrive while it is still uncommitted.
    slow = WIDGETS_0001.replace(
        "    op.create_table(", '    op.execute("SELECT pg_sleep(1.5)")\n    op.create_table(', 1
    )
    tree = _widgets_tree(tmp_path / "w", "widgets", slow, WIDGETS_0002)
    cli = [sys.executable, "-m", "services.common.db.migrations", "upgrade", "widgets"]
    procs = [
        await asyncio.create_subprocess_exec(*cli, "--url", url, "--dir", str(tree), cwd=ROOT)
        for _ in range(2)
    ]
    await asyncio.gather(*(db.migrate(url, "widgets", directory=tree) for _ in range(2)))
    assert [await p.wait() for p in procs] == [0, 0]
    assert await _versions(engine, "widgets") == ["0002"]


async def test_migrate_names_bad_input(url: str) -> None:
    with pytest.raises(ValueError, match="not a valid schema name"):
        await db.migrate(url, "Robert'); DROP")
    with pytest.raises(FileNotFoundError, match="no Alembic tree for service 'nosuch'"):
        await db.migrate(url, "nosuch")


async def test_compare_and_set_refuses_a_stale_version_and_bumps_a_fresh_one(
    url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await db.migrate(url, "widgets", directory=_widgets_tree(tmp_path, "widgets", WIDGETS_0001))
    widgets = sa.Table(
        "widgets",
        sa.MetaData(schema="widgets"),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text),
        sa.Column("version", sa.Integer),
    )
    sessions = db.session_factory(engine)
    async with sessions.begin() as s:
        await s.execute(sa.insert(widgets).values(id="w1", state="QUEUED"))  # version 1
    async with sessions.begin() as s:
        changed = await db.compare_and_set(s, widgets, {"id": "w1"}, 1, {"state": "TRAINING"})
    assert changed
    # A late redelivery still holding version 1 must not overwrite TRAINING.
    async with sessions.begin() as s:
        stale = await db.compare_and_set(s, "widgets.widgets", {"id": "w1"}, 1, {"state": "X"})
    assert not stale
    async with sessions() as s:
        row = (await s.execute(sa.select(widgets))).one()
    assert (row.state, row.version) == ("TRAINING", 2)

    async with sessions.begin() as s:
        assert await db.compare_and_set(s, "widgets.widgets", {"id": "w1"}, 2, {"state": "DONE"})
        assert not await db.compare_and_set(s, widgets, {"id": "nope"}, 1, {"state": "X"})
    async with sessions() as s:
        row = (await s.execute(sa.select(widgets))).one()
    assert (row.state, row.version) == ("DONE", 3)


async def test_compare_and_set_rejects_requests_that_would_bypass_it(engine: AsyncEngine) -> None:
    async with db.session_factory(engine)() as s:
        with pytest.raises(ValueError, match="bumps `version` itself"):
            await db.compare_and_set(s, "a.b", {"id": 1}, 1, {"version": 9})
        with pytest.raises(ValueError, match="non-empty `where`"):
            await db.compare_and_set(s, "a.b", {}, 1, {"x": 1})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgresql://u@h/d?sslmode=require", "postgresql+asyncpg://u@h/d?ssl=require"),
        ("postgresql+psycopg://u@h/d", "postgresql+asyncpg://u@h/d"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/x",
            "postgresql+asyncpg://postgres:@/postgres?host=/tmp/x",
        ),
    ],
)
def test_urls_are_normalised_to_asyncpg(given: str, expected: str) -> None:
    assert db.normalize_url(given) == expected


def test_non_postgres_urls_are_refused_without_echoing_the_password() -> None:
    with pytest.raises(ValueError, match=r"mysql://u:\*\*\*@h/d") as err:
        db.normalize_url("mysql://u:secret@h/d")
    assert "secret" not in str(err.value)


async def test_database_url_uses_the_setting_and_never_starts_a_server(pg: Postgres) -> None:
    assert db.database_url(ServiceSettings(database_url=pg.dsn)) == pg.url
    # A service without DATABASE_URL refuses to start rather than run on a private database
    # whose data would vanish with the pod.
    with pytest.raises(RuntimeError, match="DATABASE_URL is not set"):
        db.database_url(ServiceSettings(database_url=None))
