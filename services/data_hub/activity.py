"""The views' reads of a customer's activity: counts and sums over the activity windows, the net
flow per subscription since the balance lookback cutoff, and the render's read of the dirty rows
that carries them with the holdings (services/data_hub/views.py renders from it).

The windows are relative to each customer's ``as_of_us`` to the microsecond (ADR 0049): a window
of N days is ``as_of − N days < post_us ≤ as_of``. On PostgreSQL the render reads a customer's
postings once for all of it (ADR 0072); SQLite's render, the point-in-time snapshots and the
segment jobs use :func:`activity_selects`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from services.data_hub import domain
from services.data_hub.domain import DAY_US, Rules
from services.data_hub.schema import Tables, built
from services.kit import dialect_of, in_list

#: The activity aggregates of a customer, by label (:func:`activity_selects`).
ACTIVITY = ("c30", "c90", "c365", "a30", "a90", "a365", "base", "cr90", "cra90")


def _within(x: Any, as_of: Any, days: int) -> Any:
    """The postings ``x`` of the last ``days`` days as of ``as_of`` (``post_us > as_of − N days``)."""
    return x.c.post_us > as_of - days * DAY_US


def _count_if(cond: Any) -> Any:
    return func.sum(case((cond, 1), else_=0))


def _signed(x: Any) -> Any:
    """A posting's amount, credits positive and debits negative (the net flows' terms)."""
    return case((x.c.direction == domain.DIRECTION_CREDIT, x.c.amount_micros), else_=-x.c.amount_micros)


def window_aggregates(x: Any, as_of: Any, cur: str, baseline_days: int, scope: Any = None) -> list[Any]:
    """The activity aggregates of the postings ``x`` as of ``as_of``, labelled and in the order of
    ``ACTIVITY``: counts over the last 30, 90 and 365 days, their reporting-currency (``cur``)
    sums, the baseline window's count (``as_of − (30 + baseline) days < post ≤ as_of − 30
    days``), the credits of 90 days and their sum. ``scope``: a condition every posting counted
    must also meet (the 365 days up to ``as_of``), for a statement whose rows reach further; None
    where the statement's WHERE already keeps only those (:func:`activity_selects`)."""

    def only(cond: Any) -> Any:
        return cond if scope is None else and_(scope, cond)

    def amount_if(cond: Any) -> Any:
        return func.sum(case((and_(cond, x.c.currency == cur), x.c.amount_micros), else_=0))

    def within(days: int) -> Any:
        return _within(x, as_of, days)

    base = and_(x.c.post_us > as_of - (30 + baseline_days) * DAY_US, x.c.post_us <= as_of - 30 * DAY_US)
    credit_90d = and_(within(90), x.c.direction == domain.DIRECTION_CREDIT)
    terms = {
        "c30": _count_if(only(within(30))),
        "c90": _count_if(only(within(90))),
        "c365": func.count() if scope is None else _count_if(scope),
        "a30": amount_if(only(within(30))),
        "a90": amount_if(only(within(90))),
        "a365": amount_if(literal(True) if scope is None else scope),
        "base": _count_if(only(base)),
        "cr90": _count_if(only(credit_90d)),
        "cra90": amount_if(only(credit_90d)),
    }
    return [terms[k].label(k) for k in ACTIVITY]


def activity_selects(
    t: Tables, who: Callable[[Any], Any], cur: str, baseline_days: int, lookback_days: int, fixed_as_of: bool
) -> tuple[Any, Any]:
    """Per customer that ``who(transactions.customer_id)`` selects: counts and sums over the
    activity windows (:func:`window_aggregates`); net flow per holding. As of each customer's
    ``as_of_us``, or (``fixed_as_of``) of the bound ``as_of`` for all of them, counting nothing
    posted after it (the point-in-time snapshots)."""
    c, x = t.customers, t.transactions
    as_of = bindparam("as_of", type_=c.c.as_of_us.type) if fixed_as_of else c.c.as_of_us

    def within(days: int) -> Any:
        return _within(x, as_of, days)

    stmt = (
        select(x.c.customer_id, *window_aggregates(x, as_of, cur, baseline_days))
        .select_from(x.join(c, c.c.customer_id == x.c.customer_id))
        .where(who(x.c.customer_id), within(365), x.c.post_us <= as_of)
        .group_by(x.c.customer_id)
    )
    flow_where = [who(x.c.customer_id), within(lookback_days)]
    if fixed_as_of:
        flow_where.append(x.c.post_us <= as_of)
    flow = (
        select(
            x.c.customer_id,
            x.c.subscription_id,
            func.sum(_signed(x)),
        )
        .select_from(x.join(c, c.c.customer_id == x.c.customer_id))
        .where(*flow_where)
        .group_by(x.c.customer_id, x.c.subscription_id)
    )
    return stmt, flow


@built
def _activity_queries(
    t: Tables, dialect: str, cur: str, baseline_days: int, lookback_days: int, fixed_as_of: bool = False
) -> tuple[Any, Any]:
    """:func:`activity_selects` of the customers bound as ``ids``."""
    return activity_selects(t, lambda col: in_list(dialect, col, "ids"), cur, baseline_days, lookback_days, fixed_as_of)


async def activity_of(
    session: AsyncSession, t: Tables, ids: Sequence[str], rules: Rules, as_of_us: int | None = None
) -> dict[str, dict[str, Any]]:
    """The customers' activity aggregates (by ``ACTIVITY``'s labels; none for a customer without
    postings in reach) and ``flows`` (net flow per subscription since the lookback cutoff), as of
    each one's ``as_of_us``, or of ``as_of_us`` for all (the point-in-time snapshots)."""
    stmt, flow = _activity_queries(
        t, dialect_of(session), rules.reporting_currency, rules.activity_baseline_days, rules.balance_lookback_days,
        as_of_us is not None,
    )  # fmt: skip
    keys: dict[str, Any] = {"ids": list(ids)} if as_of_us is None else {"ids": list(ids), "as_of": as_of_us}
    result = {row.customer_id: dict(row._mapping) for row in (await session.execute(stmt, keys)).all()}
    for cid, sid, net in (await session.execute(flow, keys)).all():
        result.setdefault(cid, {}).setdefault("flows", {})[sid] = int(net or 0)
    return result


@built
def render_queries(
    t: Tables, dialect: str, by_ids: bool, cur: str, baseline_days: int, lookback_days: int
) -> tuple[Any, Any]:
    """A render's reads in two statements (each a round trip, ~0.5 ms of the hub's CPU through
    SQLAlchemy: five used to be one each); on PostgreSQL in one (:func:`_render_read_postgres`,
    the second statement None).

    1. The dirty rows picked (of ``ids`` if ``by_ids``; at most ``limit``, by id), each with its
       activity aggregates (``ACTIVITY``; NULL without transactions) and the catalogue's
       fingerprint (``cat_n``, ``cat_v``: the products and the sum of their versions, for the
       views' cached catalogue).
    2. The holdings of the customers bound as ``ids`` (``flow`` = 0) and their net flows per
       subscription (``flow`` = 1, the amount in ``net``), as one UNION ALL.
    """
    c, h, p = t.customers, t.holdings, t.products
    picked = select(c.c.customer_id).where(c.c.dirty.is_(True))
    if by_ids:
        picked = picked.where(in_list(dialect, c.c.customer_id, "ids"))
    chosen = picked.order_by(c.c.customer_id).limit(bindparam("limit", type_=Integer)).cte("picked")
    cols = (h.c.product_id, h.c.product_type, h.c.currency, h.c.balance_micros, h.c.state, h.c.open_us, h.c.close_us)
    catalogue = (
        select(func.count()).select_from(p).scalar_subquery().label("cat_n"),
        select(func.coalesce(func.sum(p.c.version), 0)).scalar_subquery().label("cat_v"),
    )
    if dialect == "postgresql":
        return _render_read_postgres(t, chosen, cols, catalogue, cur, baseline_days, lookback_days), None
    act, _ = activity_selects(
        t, lambda col: col.in_(select(chosen.c.customer_id)), cur, baseline_days, lookback_days, False
    )
    act = act.subquery("act")
    dirty = (
        select(c, *(act.c[k] for k in ACTIVITY), *catalogue)
        .select_from(
            c.join(chosen, chosen.c.customer_id == c.c.customer_id).outerjoin(act, act.c.customer_id == c.c.customer_id)
        )
        .order_by(c.c.customer_id)
    )
    _, flow = activity_selects(t, lambda col: in_list(dialect, col, "ids"), cur, baseline_days, lookback_days, False)
    holdings = select(
        h.c.customer_id, h.c.subscription_id, *cols, literal_column("0").label("flow"),
        cast(null(), BigInteger).label("net"),
    ).where(in_list(dialect, h.c.customer_id, "ids"))  # fmt: skip
    flows = flow.with_only_columns(
        *flow.selected_columns[:2], *(cast(null(), col.type) for col in cols), literal_column("1"),
        flow.selected_columns[2],
    )  # fmt: skip
    return dirty, union_all(holdings, flows)


def _render_read_postgres(
    t: Tables,
    chosen: Any,
    cols: tuple[Any, ...],
    catalogue: tuple[Any, ...],
    cur: str,
    baseline_days: int,
    lookback_days: int,
) -> Any:
    """PostgreSQL: the render's reads in one statement (a round trip). Each picked row with:

    - its activity aggregates (``ACTIVITY``) and its net flow per subscription since the lookback
      cutoff (``flows``: [subscription_id, net] pairs, only subscriptions with postings since the
      cutoff), both from **one** scan of the customer's postings (:func:`_per_subscription`,
      summed per customer; ADR 0072);
    - its holdings (``holdings``: a JSON array of [subscription_id, *cols] per line);
    - the catalogue's fingerprint (``catalogue``).

    NULL activity, flows or holdings for a customer without any."""
    c, h = t.customers, t.holdings
    per = _per_subscription(t, cur, baseline_days, lookback_days)
    pairs = func.json_agg(func.json_build_array(per.c.subscription_id, per.c.net)).filter(per.c.n_flow > 0)
    act = select(*(func.sum(per.c[k]).label(k) for k in ACTIVITY), cast(pairs, Text).label("flows")).lateral("act")
    # (as text: one JSON array per line, so the render looks each holding up by its line —
    # ``_holding_of_line`` — and decodes only the lines it has not seen; JSON text has no raw
    # newline: PostgreSQL escapes it inside strings. In subscription order, byte-wise — the
    # order of Python's ``sorted`` of the ids — so the view's holdings are their parts joined
    # as they come.)
    line = cast(func.json_build_array(h.c.subscription_id, *cols), Text)
    in_order = aggregate_order_by(func.chr(10), h.c.subscription_id.collate("C"))
    hold = (
        select(func.string_agg(line, in_order).label("holdings"))
        .where(h.c.customer_id == c.c.customer_id)
        .lateral("hold")
    )
    return (
        select(c, *(act.c[k] for k in ACTIVITY), *catalogue, hold.c.holdings, act.c.flows)
        .select_from(c.join(chosen, chosen.c.customer_id == c.c.customer_id))
        .join_from(c, hold, true(), isouter=True)
        .join_from(c, act, true(), isouter=True)
        .order_by(c.c.customer_id)
    )


def _per_subscription(t: Tables, cur: str, baseline_days: int, lookback_days: int) -> Any:
    """A customer's postings of the longest window (365 days, or the lookback if longer) in one
    scan, correlated to the customer's row, grouped by subscription: each group's activity
    aggregates (``ACTIVITY``, under :func:`activity_selects`' conditions), its count of postings
    since the lookback cutoff (``n_flow``) and their net flow (``net``, no upper bound, as the
    flows have). The activity windows and the lookback window used to be two scans of the same
    postings, and a render's cost grows with them (docs/perf/services.md, "Wave 18")."""
    c, x = t.customers, t.transactions
    as_of = c.c.as_of_us
    year = and_(_within(x, as_of, 365), x.c.post_us <= as_of)  # (the activity aggregates' postings)
    since_cutoff = _within(x, as_of, lookback_days)
    return (
        select(
            x.c.subscription_id,
            *window_aggregates(x, as_of, cur, baseline_days, scope=year),
            _count_if(since_cutoff).label("n_flow"),
            func.sum(case((since_cutoff, _signed(x)), else_=0)).label("net"),
        )
        .where(x.c.customer_id == c.c.customer_id, _within(x, as_of, max(365, lookback_days)))
        .group_by(x.c.subscription_id)
        .correlate(c)
        .subquery("per")
    )
