"""Fixtures for the kit's integration tests: a schema with the kit tables and a test effect table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import BigInteger, String
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit.db import Base, BigIntPK, create_engine


class EffectBase(DeclarativeBase):
    pass


class Effect(EffectBase):
    """What a consumer does per event in these tests (no unique key: duplicates would show)."""

    __tablename__ = "effects"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(BigInteger)


async def make_schema(engine: AsyncEngine) -> None:
    # The kit's own tests build the kit tables from their models; services create them with Alembic.
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(EffectBase.metadata.create_all)


@pytest.fixture(params=["postgresql", "sqlite"])
async def kit_db(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """(url, engine) with the kit tables, on PostgreSQL and on SQLite."""
    fixture = "pg_url" if request.param == "postgresql" else "sqlite_url"
    url: str = request.getfixturevalue(fixture)
    engine = create_engine(url)
    await make_schema(engine)
    yield url, engine
    await engine.dispose()


@pytest.fixture
async def pg_kit_db(pg_url: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    engine = create_engine(pg_url)
    await make_schema(engine)
    yield pg_url, engine
    await engine.dispose()


def new_id(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
