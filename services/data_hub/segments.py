"""Segments: RFM quintiles over the population (RefreshSegments, in SQL), segment listings and the
churn watch-list."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub import domain
from services.data_hub.domain import DAY_US, Rules
from services.data_hub.schema import Tables, state
from services.data_hub.served import served


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


async def segment_stage_counts(session: AsyncSession, t: Tables) -> list[tuple[int, int, int]]:
    """(segment, lifecycle stage, customers) for every non-empty cell."""
    c = t.customers
    query = (
        select(c.c.segment, c.c.lifecycle_stage, func.count())
        .where(c.c.doc.is_not(None))
        .group_by(c.c.segment, c.c.lifecycle_stage)
        .order_by(c.c.segment, c.c.lifecycle_stage)
    )
    return [(int(s), int(st), int(n)) for s, st, n in (await session.execute(query)).tuples().all()]


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
    views, last = _page(rows, page_size)
    return views, encode_token(last.customer_id) if last is not None else "", total


def _page(rows: Any, page_size: int) -> tuple[list[datahub_pb2.CustomerView], Any]:
    """The page's views (of ``page_size + 1`` rows fetched) and its last row when there are more."""
    more = len(rows) > page_size
    rows = rows[:page_size]
    return [served(r.doc, r.version, r.update_us) for r in rows], rows[-1] if more and rows else None


def encode_churn_token(score: float, last_id: str) -> str:
    return base64.urlsafe_b64encode(f"c1:{score!r}:{last_id}".encode()).decode()


def decode_churn_token(token: str) -> tuple[float, str]:
    raw = base64.urlsafe_b64decode(token.encode()).decode()
    tag, score, last_id = raw.split(":", 2)
    if tag != "c1":
        raise ValueError("bad page token")
    return float(score), last_id


async def churn_watchlist(
    session: AsyncSession, t: Tables, min_score: float, page_size: int, after: tuple[float, str] | None
) -> tuple[list[datahub_pb2.CustomerView], str, int]:
    """Views ranked by churn score (highest first, then customer id); ``min_score`` 0 = above 0."""
    c = t.customers
    floor = c.c.churn_score >= min_score if min_score > 0 else c.c.churn_score > 0
    cond = and_(floor, c.c.doc.is_not(None))
    query = select(c.c.customer_id, c.c.churn_score, c.c.doc, c.c.version, c.c.update_us).where(cond)
    if after is not None:
        score, last_id = after
        query = query.where(or_(c.c.churn_score < score, and_(c.c.churn_score == score, c.c.customer_id > last_id)))
    rows = (await session.execute(query.order_by(c.c.churn_score.desc(), c.c.customer_id).limit(page_size + 1))).all()
    total = int((await session.execute(select(func.count()).select_from(c).where(cond))).scalar_one())
    views, last = _page(rows, page_size)
    return views, encode_churn_token(last.churn_score, last.customer_id) if last is not None else "", total
