"""services.kit.migrations: a tiny Alembic script folder (built in tmp_path) run against SQLite files."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.db import create_engine
from services.kit.migrations import alembic_config, head_revisions, upgrade

ENV_PY = """
from sqlalchemy import MetaData

from services.kit.migrations import run_env

run_env(MetaData())
"""

REVISION_1 = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50)))


def downgrade():
    op.drop_table("account")
"""

REVISION_2 = """
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("currency", sa.String(3), nullable=False, server_default="CNY"))


def downgrade():
    with op.batch_alter_table("account") as batch:
        batch.drop_column("currency")
"""


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(textwrap.dedent(ENV_PY))
    (folder / "versions" / "0001_account.py").write_text(textwrap.dedent(REVISION_1))
    (folder / "versions" / "0002_currency.py").write_text(textwrap.dedent(REVISION_2))
    return folder


async def version(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


async def columns(engine: AsyncEngine, table: str) -> list[str]:
    async with engine.connect() as conn:
        return [row[1] for row in await conn.exec_driver_sql(f"PRAGMA table_info({table})")]


async def test_upgrade_runs_the_migrations_to_head(scripts: Path, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await upgrade(engine, scripts)
        assert await version(engine) == ["0002"]
        assert await columns(engine, "account") == ["id", "name", "currency"]
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent(scripts: Path, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await upgrade(engine, scripts)
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO account (name) VALUES ('kept')"))
        await upgrade(engine, scripts)  # would fail on CREATE TABLE if it ran the revisions again
        assert await version(engine) == ["0002"]
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT name, currency FROM account"))).all()
        assert [tuple(r) for r in rows] == [("kept", "CNY")]
    finally:
        await engine.dispose()


async def test_upgrade_stops_at_the_requested_revision_and_resumes(scripts: Path, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await upgrade(engine, scripts, "0001")
        assert await version(engine) == ["0001"]
        assert await columns(engine, "account") == ["id", "name"]
        await upgrade(engine, scripts)
        assert await version(engine) == ["0002"]
    finally:
        await engine.dispose()


def test_alembic_config_escapes_percent_signs_in_urls(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://bank:p%40ss%25word@db:5432/customer"
    cfg = alembic_config(tmp_path, url)
    assert cfg.get_main_option("sqlalchemy.url") == url
    assert cfg.get_main_option("script_location") == str(tmp_path)
    unescaped = Config()
    unescaped.set_main_option("script_location", str(tmp_path))
    with pytest.raises(ValueError, match="interpolation"):  # what the escaping prevents
        unescaped.set_main_option("sqlalchemy.url", url)


def test_alembic_config_without_a_url_leaves_it_unset(tmp_path: Path) -> None:
    assert alembic_config(tmp_path).get_main_option("sqlalchemy.url") is None


async def test_the_env_runs_from_a_configured_url_with_a_percent_in_the_path(scripts: Path, tmp_path: Path) -> None:
    # The `zhongtai migrate`-style path: no connection given, env.py opens its own engine from the URL.
    db = tmp_path / "50%off" / "db.sqlite"
    db.parent.mkdir()
    cfg = alembic_config(scripts, f"sqlite+aiosqlite:///{db}")
    await asyncio.to_thread(command.upgrade, cfg, "head")  # env.py calls asyncio.run: keep it off our loop
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        assert await version(engine) == ["0002"]
    finally:
        await engine.dispose()


async def test_the_env_refuses_to_run_without_a_connection_or_url(scripts: Path) -> None:
    with pytest.raises(RuntimeError, match="no connection given"):
        await asyncio.to_thread(command.upgrade, alembic_config(scripts), "head")


def test_head_revisions_are_read_from_the_version_files(scripts: Path) -> None:
    assert head_revisions(scripts) == {"0002"}
    (scripts / "versions" / "0003_branch.py").write_text('revision = "0003"\ndown_revision = "0001"\n')
    assert head_revisions(scripts) == {"0002", "0003"}  # two heads


@pytest.mark.parametrize(
    "header",
    [
        'revision = "0003"\ndown_revision = "0002"\nbranch_labels = ("x",)\n',
        'revision = make()\ndown_revision = "0002"\n',
    ],
    ids=["branch-labels", "computed"],
)
def test_head_revisions_leave_anything_unusual_to_alembic(scripts: Path, header: str) -> None:
    (scripts / "versions" / "0003_odd.py").write_text(header)
    assert head_revisions(scripts) is None


async def test_a_database_at_head_is_left_alone_and_a_new_revision_still_runs(scripts: Path, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await upgrade(engine, scripts, "0001")
        await upgrade(engine, scripts)  # behind head: Alembic runs
        assert await version(engine) == ["0002"]
        (scripts / "env.py").write_text("raise SystemExit('Alembic ran')\n")
        await upgrade(engine, scripts)  # at head: Alembic is not run (its env.py would raise)
        (scripts / "env.py").write_text(textwrap.dedent(ENV_PY))
        (scripts / "versions" / "0003_note.py").write_text(textwrap.dedent(REVISION_3))
        await upgrade(engine, scripts)
        assert await version(engine) == ["0003"]
        assert await columns(engine, "note") == ["id"]
    finally:
        await engine.dispose()


REVISION_3 = """
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    op.create_table("note", sa.Column("id", sa.Integer, primary_key=True))
"""
