"""Staged inserts (ADR 0031): written at commit in staging order, one statement on PostgreSQL;
forgotten on rollback; a unique violation surfaces from the commit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError

from bank.customer.v1 import events_pb2
from services.kit import UnitOfWork, add_event, stage_insert
from services.kit.outbox import OutboxRow

from .conftest import Effect, new_id

EFFECTS: Table = Effect.__table__  # type: ignore[assignment]
OUTBOX: Table = OutboxRow.__table__  # type: ignore[assignment]


def _event(customer_id: str, version: int) -> events_pb2.CustomerCreated:
    event = events_pb2.CustomerCreated(customer_id=customer_id, version=version)
    event.customer.customer_id = customer_id
    return event


def _stage(session, customer_id: str, versions: range) -> None:  # type: ignore[no-untyped-def]
    for version in versions:
        add_event(session, _event(customer_id, version), source="/t", aggregate_type="customer",
                  aggregate_id=customer_id, version=version)  # fmt: skip


async def test_rows_of_several_tables_commit_together_and_keep_their_order(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    customer_id, effect_id = new_id(), new_id("e")
    async with UnitOfWork(engine) as uow:
        stage_insert(uow.session, EFFECTS, {"event_id": effect_id, "aggregate_id": customer_id, "version": 1})
        _stage(uow.session, customer_id, range(1, 4))  # three rows of one table: a multi-row VALUES
        await uow.commit()
    async with UnitOfWork(engine) as uow:
        versions = (
            await uow.session.scalars(
                select(OutboxRow.aggregate_version).where(OutboxRow.aggregate_id == customer_id).order_by(OutboxRow.id)
            )
        ).all()
        effects = (await uow.session.scalars(select(EFFECTS.c.event_id).where(EFFECTS.c.event_id == effect_id))).all()
    assert list(versions) == [1, 2, 3]
    assert list(effects) == [effect_id]


async def test_a_rollback_forgets_what_was_staged(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    customer_id = new_id()
    async with UnitOfWork(engine) as uow:
        _stage(uow.session, customer_id, range(1, 2))
        # no commit: the unit of work rolls back
    async with UnitOfWork(engine) as uow:
        _stage(uow.session, new_id(), range(1, 2))
        await uow.commit()  # a later commit on a new session does not carry the forgotten row
    async with UnitOfWork(engine) as uow:
        left = (await uow.session.scalars(select(OutboxRow.id).where(OutboxRow.aggregate_id == customer_id))).all()
    assert left == []


def _outbox_row(event_id: str, aggregate_id: str) -> dict[str, object]:
    return {"event_id": event_id, "event_type": "t", "aggregate_type": "customer", "aggregate_id": aggregate_id,
            "aggregate_version": 1, "topic": "t", "key": b"k", "payload": b"", "headers": "{}", "traceparent": None,
            "created_at": datetime.now(UTC), "attempts": 0}  # fmt: skip


async def test_a_unique_violation_surfaces_from_the_commit_and_writes_nothing(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    event_id, customer_id = new_id("e"), new_id()
    async with UnitOfWork(engine) as uow:
        stage_insert(uow.session, OUTBOX, _outbox_row(event_id, new_id()))
        await uow.commit()
    with pytest.raises(IntegrityError):
        async with UnitOfWork(engine) as uow:
            stage_insert(uow.session, EFFECTS, {"event_id": event_id, "aggregate_id": customer_id, "version": 1})
            stage_insert(uow.session, OUTBOX, _outbox_row(event_id, customer_id))  # the same event_id again
            await uow.commit()
    async with UnitOfWork(engine) as uow:
        left = (await uow.session.scalars(select(EFFECTS.c.id).where(EFFECTS.c.aggregate_id == customer_id))).all()
    assert left == []
