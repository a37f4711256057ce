"""Monthly point-in-time feature snapshots, in the hub's database (``dh_feature_snapshots``).

A snapshot at ``T`` (00:00 UTC on the 1st of a month) holds, per registered customer, the
features (services/data_hub/features.py), the rules' churn score and offers, the products held
and the products the customer was eligible for — computed from the hub's facts *as they were at
T*: transactions posted after T are not counted, a holding opened after T does not exist yet, one
closed after T is still open, and its balance is today's minus the net flow after T (the facts
are commutative and insert-only, so this is exact whatever arrived later). Rows are inserted once
and never updated (``ON CONFLICT DO NOTHING``): a later event cannot change an earlier snapshot,
and a replay of the same events gives the same rows.

Limit (docs/data-hub.md): the hub keeps only the newest customer snapshot, so status, KYC and
risk tolerance are the newest known when the snapshot is taken, not as of T.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, and_, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.data_hub import domain, features, views
from services.data_hub.activity import activity_of
from services.data_hub.domain import MICROS, Rules
from services.data_hub.schema import Tables, built, feature_snapshots
from services.kit import bulk_insert, dialect_of, in_list

CHUNK = 500


def month_starts(from_us: int, through_us: int) -> list[int]:
    """Every 1st-of-month 00:00 UTC in (from_us, through_us], in epoch microseconds."""
    d = datetime.fromtimestamp(from_us / MICROS, UTC)
    year, month = d.year, d.month
    out: list[int] = []
    while True:
        month += 1
        if month > 12:
            year, month = year + 1, 1
        t = int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * MICROS
        if t > through_us:
            return out
        out.append(t)


@built
def _point_in_time_queries(t: Tables, dialect: str) -> tuple[Any, Any]:
    """Per customer of ``ids`` as of ``as_of``: the net flow after it per holding, the last
    transaction up to it."""
    x = t.transactions
    as_of = bindparam("as_of", type_=BigInteger)
    after = (
        select(
            x.c.subscription_id,
            func.sum(case((x.c.direction == domain.DIRECTION_CREDIT, x.c.amount_micros), else_=-x.c.amount_micros)),
        )
        .where(in_list(dialect, x.c.customer_id, "ids"), x.c.post_us > as_of)
        .group_by(x.c.subscription_id)
    )
    last = (
        select(x.c.customer_id, func.max(x.c.post_us))
        .where(in_list(dialect, x.c.customer_id, "ids"), x.c.post_us <= as_of)
        .group_by(x.c.customer_id)
    )
    return after, last


@built
def _customers_query(t: Tables, dialect: str) -> Any:
    c = t.customers
    return select(c).where(in_list(dialect, c.c.customer_id, "ids")).order_by(c.c.customer_id)


def holding_as_of(h: domain.Holding, as_of_us: int, flow_after: int) -> domain.Holding | None:
    """The holding as it was at ``as_of_us`` (None: not opened yet)."""
    if h.open_us is not None and h.open_us > as_of_us:
        return None
    closed = h.close_us is not None and h.close_us <= as_of_us
    return replace(
        h,
        balance_micros=h.balance_micros - flow_after,
        state=domain.HOLDING_CLOSED if closed else domain.HOLDING_OPEN,
        close_us=h.close_us if closed else None,
    )


def snapshot_row(facts: domain.CustomerFacts, catalogue: Sequence[domain.Product], rules: Rules) -> dict[str, Any]:
    """One customer's snapshot row (pure): what the scores are trained and back-tested on."""
    plain = replace(rules, model=None)
    eligible = domain.eligible_products(facts, catalogue)
    seg = domain.segment(facts, plain)
    return {
        "as_of_us": facts.as_of_us,
        "customer_id": facts.customer_id,
        "feature_version": features.VERSION,
        "features": json.dumps([round(v, 6) for v in features.vector(facts, plain)]),
        "rules_churn": domain.churn_risk(facts, plain).score,
        "held": json.dumps(sorted({h.product_id for h in facts.holdings if h.state != domain.HOLDING_CLOSED})),
        "eligible": json.dumps([p.product_id for p in eligible]),
        "rules_offers": json.dumps([o.product_id for o in domain.next_best_offers(facts, seg, catalogue, plain)]),
    }


async def facts_as_of(
    session: AsyncSession, t: Tables, ids: Sequence[str], as_of_us: int, rules: Rules
) -> list[domain.CustomerFacts]:
    """The facts of these customers as they were at ``as_of_us`` (only those registered by then)."""
    dialect = dialect_of(session)
    keys = {"ids": list(ids), "as_of": as_of_us}
    after_q, last_q = _point_in_time_queries(t, dialect)
    flow_after = {sid: int(net or 0) for sid, net in (await session.execute(after_q, keys)).all()}
    last_txn = {cid: int(us) for cid, us in (await session.execute(last_q, keys)).all()}
    rows = (await session.execute(_customers_query(t, dialect), {"ids": list(ids)})).mappings().all()
    holdings = await views._holdings_of(session, t, list(ids))
    activity = await activity_of(session, t, ids, rules, as_of_us)
    out = []
    for row in rows:
        cid = row["customer_id"]
        if not row["registered"] or row["create_us"] is None or row["create_us"] > as_of_us:
            continue
        then = [
            h
            for h in (holding_as_of(h, as_of_us, flow_after.get(h.subscription_id, 0)) for h in holdings.get(cid, []))
            if h is not None
        ]
        point = {**row, "as_of_us": as_of_us, "last_txn_us": last_txn.get(cid), "r": 0, "f": 0, "m": 0}
        out.append(views._facts(point, then, activity.get(cid, {})))
    return out


async def take(session: AsyncSession, t: Tables, as_of_us: int, rules: Rules) -> int:
    """Snapshot every customer registered by ``as_of_us``; rows already there are kept as they
    are. Returns the rows offered for insertion. The caller commits."""
    c = t.customers
    ids_q = select(c.c.customer_id).where(and_(c.c.registered.is_(True), c.c.create_us <= as_of_us))
    ids = [r[0] for r in (await session.execute(ids_q.order_by(c.c.customer_id))).all()]
    catalogue = await views.load_catalogue(session, t)
    written = 0
    for i in range(0, len(ids), CHUNK):
        facts = await facts_as_of(session, t, ids[i : i + CHUNK], as_of_us, rules)
        rows = [snapshot_row(f, catalogue, rules) for f in facts]
        await bulk_insert(session, feature_snapshots, rows, skip_conflicts_on=["as_of_us", "customer_id"])
        written += len(rows)
    return written


async def due(session: AsyncSession, t: Tables, *, grace_us: int = 86_400 * MICROS) -> list[int]:
    """The month starts not snapshotted yet that every customer's facts have passed: from the
    first transaction to the newest event time minus ``grace_us`` (late events)."""
    c, x = t.customers, t.transactions
    first = (await session.execute(select(func.min(x.c.post_us)))).scalar_one()
    newest = (await session.execute(select(func.max(c.c.last_event_us)))).scalar_one()
    if first is None or newest is None:
        return []  # (no transaction yet: nothing to learn from)
    done = {r[0] for r in (await session.execute(select(feature_snapshots.c.as_of_us).distinct())).all()}
    return [m for m in month_starts(first, newest - grace_us) if m not in done]
