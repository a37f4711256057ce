"""The outbox relay's claim on PostgreSQL: the statement, which claimed rows may go now, and a
round on the pooled asyncpg connection (ADR 0042). Used by :class:`services.kit.outbox.OutboxRelay`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit.reads import _Compiled

#: Claim a batch and, in the same statement (one round trip), find per aggregate the oldest
#: pending row this batch did not claim (held by another round or relay, or not visible yet).
#: Not a correlated subquery: its cost must not depend on the planner's statistics.
PG_CLAIM = text(
    """
    WITH claimed AS MATERIALIZED (
        SELECT id, event_id, aggregate_id, topic, key, payload, headers, traceparent, created_at
        FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    ), foreign_rows AS (
        SELECT o.aggregate_id, min(o.id) AS first_foreign
        FROM outbox o
        WHERE o.published_at IS NULL
          AND o.aggregate_id IN (SELECT aggregate_id FROM claimed)
          AND o.id <= (SELECT max(id) FROM claimed)
          AND o.id NOT IN (SELECT id FROM claimed)
        GROUP BY o.aggregate_id
    )
    SELECT claimed.*, foreign_rows.first_foreign
    FROM claimed LEFT JOIN foreign_rows ON foreign_rows.aggregate_id = claimed.aggregate_id
    ORDER BY claimed.id
    """
)

#: The driver round's mark (the published ids follow, inlined; see :func:`driver_round`).
_MARK_SQL = "UPDATE outbox SET published_at = clock_timestamp() WHERE id ="


class Claimed(NamedTuple):
    """A row of :data:`PG_CLAIM` (in its column order)."""

    id: int
    event_id: str
    aggregate_id: str
    topic: str
    key: bytes
    payload: bytes
    headers: str
    traceparent: str | None
    created_at: datetime
    first_foreign: int | None


def publishable(claimed: Sequence[Any], first_foreign: dict[str, int]) -> list[Any]:
    """Per aggregate, the claimed rows that come before its oldest pending row outside the batch.

    ``first_foreign`` maps an aggregate to the smallest id of its pending rows that this batch
    did not claim (held by another relay, or not visible yet); rows after it must wait.
    """
    rows = []
    for row in claimed:
        foreign = first_foreign.get(row.aggregate_id)
        if foreign is None or row.id < foreign:
            rows.append(row)
    return rows


async def driver_round(
    conn: AsyncConnection, claim: _Compiled, batch_size: int, send: Callable[[list[Any]], Awaitable[None]]
) -> tuple[list[Any], list[Any]]:
    """One relay round on ``conn``'s asyncpg connection: BEGIN, the claim (``claim`` is
    :data:`PG_CLAIM` compiled), ``send`` (the acks), and the mark sent with the COMMIT as one
    message (ids are the table's own integers, inlined: a simple query takes no parameters).
    Three round trips and no SQLAlchemy execution layer, where the session path takes four
    through it: at low rates every write pays a round of its own. (claimed, published)"""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    try:
        await driver.execute("BEGIN")
        found = await driver.fetch(claim.sql, *claim.args({"limit": batch_size}))
        claimed = [Claimed(*r) for r in found]
        rows = publishable(claimed, {r.aggregate_id: r.first_foreign for r in claimed if r.first_foreign})
        if rows:
            await send(rows)
            ids = ",".join(str(int(r.id)) for r in rows)
            await driver.execute(f"{_MARK_SQL} ANY('{{{ids}}}'::bigint[]); COMMIT")
        else:
            await driver.execute("COMMIT")
    except BaseException:
        if driver.is_closed():
            await conn.invalidate()
        elif driver.is_in_transaction():
            try:
                await driver.execute("ROLLBACK")
            except Exception:
                await conn.invalidate()
        raise
    return claimed, rows
