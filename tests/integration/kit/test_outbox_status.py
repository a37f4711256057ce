"""The kit's GetOutboxStatus answer (every capability's outbox backlog), on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from services.kit import outbox_status
from services.kit.db import UnitOfWork
from services.kit.outbox import OutboxRow

from .conftest import new_id
from .test_outbox_relay import write_events


async def test_backlog_counts_unpublished_rows_and_dates_the_oldest(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    before = await outbox_status(engine, "customer")
    assert before.capability == "customer"
    start = datetime.now(UTC)
    customer_id = new_id()
    await write_events(engine, customer_id, range(1, 4))

    waiting = await outbox_status(engine, "customer")
    assert waiting.backlog == before.backlog + 3
    assert waiting.HasField("oldest_pending_time")
    if before.backlog == 0:  # (the oldest is one of ours)
        assert waiting.oldest_pending_time.ToDatetime(UTC) >= start.replace(microsecond=0)

    async with UnitOfWork(engine) as uow:
        at = datetime.now(UTC)
        await uow.session.execute(
            update(OutboxRow).where(OutboxRow.aggregate_id == customer_id).values(published_at=at)
        )
        await uow.commit()
    published = await outbox_status(engine, "customer")
    assert published.backlog == before.backlog
    assert published.HasField("last_publish_time")
    assert abs(published.last_publish_time.ToDatetime(UTC) - at).total_seconds() < 1
