"""Applying a dead-lettered event again, through the same inbox as live consumption.

:func:`reapply` runs in the caller's transaction (which also records the dead letter's new
state and the operator's audit row, so the three commit together): it drops the event's
``dead`` inbox row, checks its aggregate version like the consumer does, runs the handler or
the projection on it, and writes its inbox row. An event already in the inbox as applied or
stale is not applied again: replay is exactly once, whatever the number of calls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.consumer import Handler, Projection
from services.kit.events import ReceivedEvent
from services.kit.inbox import InboxRow, _Batch, _flush, _is_stale

APPLIED, STALE, DUPLICATE = "APPLIED", "STALE", "DUPLICATE"


async def reapply(
    session: AsyncSession,
    event: ReceivedEvent,
    *,
    handler: Handler | None = None,
    projection: Projection[Any, Any] | None = None,
) -> tuple[str, Any]:
    """(APPLIED | STALE | DUPLICATE, what the projection's ``apply`` returned or None).

    The caller commits, then tells the projection (``committed``) when it returned something.
    Raises whatever the handler or projection raises (the caller rolls back: nothing changed).
    """
    status = await session.scalar(select(InboxRow.status).where(InboxRow.event_id == event.id).with_for_update())
    if status is not None and status != "dead":
        return DUPLICATE, None
    if status == "dead":
        await session.execute(delete(InboxRow).where(InboxRow.event_id == event.id))
    batch = _Batch(now=datetime.now(UTC))
    outcome, result = STALE, None
    if not await _is_stale(session, batch, event):
        outcome = APPLIED
        if handler is not None:
            await handler(session, event)
        if projection is not None:
            result = await projection.apply(session, projection.fold([event]))
    batch.inbox.append(
        {
            "event_id": event.id,
            "event_type": event.type,
            "topic": event.topic,
            "partition": event.partition,
            "offset": event.offset,
            "status": outcome.lower(),
            "error": None,
            "processed_at": batch.now,
        }
    )
    await _flush(session, batch)
    return outcome, result
