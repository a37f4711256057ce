"""Alembic, the only way a schema changes: each service keeps a ``migrations/`` folder.

A service's ``migrations/env.py`` is two lines::

    from services.kit.migrations import run_env
    run_env(target_metadata)

and :func:`upgrade` runs its migrations to head on an async engine (used at start-up, by the
``zhongtai migrate`` command and by the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def alembic_config(script_location: Path, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, script_location: Path, revision: str = "head") -> None:
    """Migrate the engine's database to ``revision``."""
    cfg = alembic_config(script_location)

    def _run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


def _do_run(connection: Connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_env(target_metadata: MetaData) -> None:
    """Body of a service's ``env.py``: online migrations on a given or configured connection."""
    config = context.config
    connection: Any = config.attributes.get("connection")
    if connection is not None:
        _do_run(connection, target_metadata)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    import asyncio

    async def _online() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.begin() as conn:
            await conn.run_sync(_do_run, target_metadata)
        await engine.dispose()

    asyncio.run(_online())
