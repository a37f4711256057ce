"""The render's activity aggregates and net flows, exact at every window's edge.

On PostgreSQL the render reads a customer's postings once for both (a LATERAL scan grouped by
subscription, ``activity._render_read_postgres``); SQLite, the point-in-time snapshots and the
segment jobs use ``activity.activity_selects``. Both are held here to the same reference, computed
in Python from the rules' definitions: a window of N days is ``as_of − N days < post ≤ as_of``
(the baseline: ``as_of − (30 + baseline) days < post ≤ as_of − 30 days``), amounts count the
reporting currency only, and the net flow since the lookback cutoff has no upper bound."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.data_hub import schema, views
from services.data_hub.activity import ACTIVITY, activity_of, render_queries
from services.data_hub.domain import DAY_US, DIRECTION_CREDIT, DIRECTION_DEBIT, Rules
from services.kit import dialect_of, fetch
from services.kit.db import UnitOfWork

AS_OF = 1_780_000_000_000_000  # (a fixed instant: every post time below is relative to it)


@dataclasses.dataclass(frozen=True)
class Posting:
    subscription_id: str
    direction: int
    amount_micros: int
    currency: str
    post_us: int


def _edges(rules: Rules) -> list[int]:
    """Post times on both sides of every edge the rules define (to the microsecond)."""
    edges = [AS_OF - d * DAY_US for d in (30, 90, 365, 30 + rules.activity_baseline_days, rules.balance_lookback_days)]
    return sorted({t + k for t in [*edges, AS_OF] for k in (-1, 0, 1)} | {AS_OF - 400 * DAY_US, AS_OF - 5 * DAY_US})


def _postings(rules: Rules) -> list[Posting]:
    out = []
    for i, post_us in enumerate(_edges(rules)):
        for sid, currency in (("s-cny", "CNY"), ("s-usd", "USD")):
            direction = DIRECTION_CREDIT if i % 2 == 0 else DIRECTION_DEBIT
            out.append(Posting(sid, direction, 1_000_000 * (i + 1), currency, post_us))
    # a subscription whose postings all precede the lookback cutoff: no net flow listed for it
    out.append(Posting("s-old", DIRECTION_CREDIT, 7_000_000, "CNY", AS_OF - 200 * DAY_US))
    return out


def _expected(postings: list[Posting], rules: Rules) -> tuple[dict[str, int], dict[str, int]]:
    def within(p: Posting, days: int) -> bool:
        return p.post_us > AS_OF - days * DAY_US

    year = [p for p in postings if within(p, 365) and p.post_us <= AS_OF]

    def count(cond: Any) -> int:
        return sum(1 for p in year if cond(p))

    def amount(cond: Any) -> int:
        return sum(p.amount_micros for p in year if cond(p) and p.currency == rules.reporting_currency)

    def credit_90d(p: Posting) -> bool:
        return within(p, 90) and p.direction == DIRECTION_CREDIT

    def base(p: Posting) -> bool:
        return AS_OF - (30 + rules.activity_baseline_days) * DAY_US < p.post_us <= AS_OF - 30 * DAY_US

    activity = {
        "c30": count(lambda p: within(p, 30)),
        "c90": count(lambda p: within(p, 90)),
        "c365": len(year),
        "a30": amount(lambda p: within(p, 30)),
        "a90": amount(lambda p: within(p, 90)),
        "a365": amount(lambda p: True),
        "base": count(base),
        "cr90": count(credit_90d),
        "cra90": amount(credit_90d),
    }
    flows: dict[str, int] = {}
    for p in postings:
        if within(p, rules.balance_lookback_days):
            signed = p.amount_micros if p.direction == DIRECTION_CREDIT else -p.amount_micros
            flows[p.subscription_id] = flows.get(p.subscription_id, 0) + signed
    return activity, flows


async def _render_read(engine: AsyncEngine, rules: Rules, ids: list[str]) -> dict[str, tuple[dict[str, int], Any]]:
    """Each customer's activity aggregates and net flows, as the render reads them."""
    t = schema.SETS["a"]
    async with UnitOfWork(engine) as uow:
        session = uow.session
        dirty, holdings_q = render_queries(
            t, dialect_of(session), True, rules.reporting_currency, rules.activity_baseline_days,
            rules.balance_lookback_days,
        )  # fmt: skip
        rows = await fetch(session, dirty, {"limit": 100, "ids": ids})
        if holdings_q is None:
            _, flows = views._holdings_and_flows_of(rows)
        else:
            _, flows = await views._holdings_and_flows(session, holdings_q, ids)
    return {r["customer_id"]: ({k: int(r[k] or 0) for k in ACTIVITY}, flows.get(r["customer_id"], {})) for r in rows}


async def _seed(engine: AsyncEngine, postings: dict[str, list[Posting]]) -> None:
    t = schema.SETS["a"]
    async with UnitOfWork(engine) as uow:
        for cid, mine in postings.items():
            await uow.session.execute(insert(t.customers).values(customer_id=cid, as_of_us=AS_OF, dirty=True))
            if mine:
                await uow.session.execute(
                    insert(t.transactions),
                    [
                        {"transaction_id": f"{cid}-{i}", "customer_id": cid, **dataclasses.asdict(p)}
                        for i, p in enumerate(mine)
                    ],
                )
        await uow.commit()


async def test_the_render_reads_every_activity_window_and_net_flow_exactly(hub_engine: AsyncEngine) -> None:
    for rules in (Rules.from_json(""), dataclasses.replace(Rules.from_json(""), balance_lookback_days=400)):
        await _check(hub_engine, rules)


async def _check(engine: AsyncEngine, rules: Rules) -> None:
    tag = f"l{rules.balance_lookback_days}"
    busy = _postings(rules)
    postings = {
        f"{tag}-busy": busy,
        f"{tag}-none": [],  # no postings at all: every aggregate 0, no flows
        f"{tag}-stale": [Posting("s-1", DIRECTION_CREDIT, 5_000_000, "CNY", AS_OF - 500 * DAY_US)],  # none in reach
    }
    await _seed(engine, postings)
    read = await _render_read(engine, rules, list(postings))
    assert set(read) == set(postings)
    for cid, mine in postings.items():
        activity, flows = _expected(mine, rules)
        assert read[cid][0] == activity, cid
        assert read[cid][1] == flows, cid
    # (the case is not trivial: each window and the baseline count some postings and not others)
    activity, flows = _expected(busy, rules)
    assert 0 < activity["c30"] < activity["c90"] < activity["c365"] < len(busy)
    assert min(activity["a30"], activity["base"], activity["cr90"]) > 0
    assert set(flows) == ({"s-cny", "s-usd", "s-old"} if rules.balance_lookback_days > 200 else {"s-cny", "s-usd"})
    # and the old two-scan query, still used by the snapshots and segment jobs, agrees
    async with UnitOfWork(engine) as uow:
        old = await activity_of(uow.session, schema.SETS["a"], [f"{tag}-busy"], rules)
    assert {k: int(old[f"{tag}-busy"][k] or 0) for k in ACTIVITY} == activity
    assert old[f"{tag}-busy"]["flows"] == flows
