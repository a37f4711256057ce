"""Segments: RFM quintiles over the population (RefreshSegments, in SQL) and segment listings."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub import domain
from services.data_hub.domain import DAY_US, Rules
from services.data_hub.schema import Tables, state
from services.data_hub.views import served


async def refresh_rfm(session: AsyncSession, t: Tables, rules: Rules, as_of_us: int) -> int:
    """Score the population with NTILE(5) in SQL; mark every view dirty. Returns customers scored.

    Population: registered ACTIVE customers past the first ``new_customer_days``. Recency orders by
    the last transaction time (later = higher score), frequency by the transaction count over 365
    days, monetary by the open reporting-currency balance (AUM). Ties break by customer_id so the
    quintiles are deterministic.
    """
    c, q = t.customers, t.rfm
    scored = _rfm_scores(t, rules, as_of_us)
    await session.execute(delete(q))
    await session.execute(insert(q).from_select(["customer_id", "r", "f", "m"], scored))
    scored_count = int((await session.execute(select(func.count()).select_from(q))).scalar_one())

    def pick(col: str) -> Any:
        return func.coalesce(select(q.c[col]).where(q.c.customer_id == c.c.customer_id).scalar_subquery(), 0)

    await session.execute(
        update(c).values(
            r=pick("r"),
            f=pick("f"),
            m=pick("m"),
            rfm_us=as_of_us,
            as_of_us=case((c.c.as_of_us < as_of_us, as_of_us), else_=c.c.as_of_us),
            dirty=True,
            change_seq=c.c.change_seq + 1,
        )
    )
    await session.execute(update(state).where(state.c.id == 1).values(refresh_us=as_of_us))
    return scored_count


def _rfm_scores(t: Tables, rules: Rules, as_of_us: int) -> Any:
    """(customer_id, r, f, m) of the scored population: NTILE(5) over each measure."""
    c, x, h = t.customers, t.transactions, t.holdings
    freq = (
        select(x.c.customer_id, func.count().label("n"))
        .where(x.c.post_us > as_of_us - 365 * DAY_US, x.c.post_us <= as_of_us)
        .group_by(x.c.customer_id)
        .subquery("freq")
    )
    money = (
        select(h.c.customer_id, func.sum(h.c.balance_micros).label("s"))
        .where(h.c.state != domain.HOLDING_CLOSED, h.c.currency == rules.reporting_currency)
        .group_by(h.c.customer_id)
        .subquery("money")
    )
    last = func.coalesce(c.c.last_txn_us, 0)
    n = func.coalesce(freq.c.n, 0)
    s = func.coalesce(money.c.s, 0)
    return (
        select(
            c.c.customer_id,
            func.ntile(5).over(order_by=(last, c.c.customer_id)).label("r"),
            func.ntile(5).over(order_by=(n, c.c.customer_id)).label("f"),
            func.ntile(5).over(order_by=(s, c.c.customer_id)).label("m"),
        )
        .select_from(
            c.outerjoin(freq, freq.c.customer_id == c.c.customer_id).outerjoin(
                money, money.c.customer_id == c.c.customer_id
            )
        )
        .where(
            c.c.registered.is_(True),
            c.c.status == domain.STATUS_ACTIVE,
            func.coalesce(c.c.create_us, 0) <= as_of_us - rules.new_customer_days * DAY_US,
        )
    )


async def segment_counts(session: AsyncSession, t: Tables) -> tuple[dict[int, int], dict[int, int], int]:
    c = t.customers
    visible = c.c.doc.is_not(None)
    seg_q = select(c.c.segment, func.count()).where(visible).group_by(c.c.segment)
    stage_q = select(c.c.lifecycle_stage, func.count()).where(visible).group_by(c.c.lifecycle_stage)
    segs = {int(k): int(v) for k, v in (await session.execute(seg_q)).tuples().all()}
    stages = {int(k): int(v) for k, v in (await session.execute(stage_q)).tuples().all()}
    total = int((await session.execute(select(func.count()).select_from(c).where(visible))).scalar_one())
    return segs, stages, total


def encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode()


def decode_token(token: str) -> str:
    raw = base64.urlsafe_b64decode(token.encode()).decode()
    if not raw.startswith("v1:"):
        raise ValueError("bad page token")
    return raw[3:]


async def segment_members(
    session: AsyncSession, t: Tables, segment_value: int, page_size: int, after: str
) -> tuple[list[datahub_pb2.CustomerView], str, int]:
    c = t.customers
    cond = and_(c.c.segment == segment_value, c.c.doc.is_not(None))
    rows = (
        await session.execute(
            select(c.c.customer_id, c.c.doc, c.c.version, c.c.update_us)
            .where(cond, c.c.customer_id > after)
            .order_by(c.c.customer_id)
            .limit(page_size + 1)
        )
    ).all()
    total = int((await session.execute(select(func.count()).select_from(c).where(cond))).scalar_one())
    more = len(rows) > page_size
    rows = rows[:page_size]
    views = [served(r.doc, r.version, r.update_us) for r in rows]
    return views, encode_token(rows[-1].customer_id) if more and rows else "", total
