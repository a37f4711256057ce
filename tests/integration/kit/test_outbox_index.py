"""The services' migrations give their outbox the partial index the relay's claim relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from services.kit.db import create_engine
from services.kit.migrations import upgrade

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("service", ["customer", "product"])
async def test_outbox_has_a_partial_index_over_unpublished_rows(service: str, pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        await upgrade(engine, ROOT / "services" / service / "migrations")
        async with engine.connect() as conn:
            definition = await conn.scalar(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'outbox' AND indexname = 'ix_outbox_unpublished'"
                )
            )
            # The claim's own query is served by it (an index scan over pending rows only).
            await conn.execute(text("SET enable_seqscan = off"))
            plan = "\n".join(
                (
                    await conn.execute(
                        text(
                            "EXPLAIN SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 500 "
                            "FOR UPDATE SKIP LOCKED"
                        )
                    )
                ).scalars()
            )
    finally:
        await engine.dispose()
    assert definition is not None and "WHERE (published_at IS NULL)" in definition, definition
    assert "ix_outbox_unpublished" in plan, plan
