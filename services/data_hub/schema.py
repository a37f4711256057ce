"""The hub's tables (SQLAlchemy Core): two identical table sets and the state row that picks one.

Two identical table sets, ``dh_a_*`` and ``dh_b_*`` (blue/green), both created by Alembic;
``dh_state.active`` names the one that serves. Live events go to the active set; the rebuild
command replays from offset 0 into the other one and then flips ``active`` (services/data_hub/
rebuild.py). Per set:

- ``customers``: the customer snapshot (masked), freshness, derived columns (segment, stage,
  churn score, RFM) and the rendered view document ``doc`` with its ``version``;
- ``holdings``: one row per subscription (latest version wins);
- ``transactions``: one row per posted transaction (insert-only; key: customer, post time, id);
- ``products``: the replicated catalogue (latest version wins);
- ``rfm``: scratch table of the last RefreshSegments run.

Who reads and writes them: services/data_hub/facts.py writes what the fold
(services/data_hub/fold.py) makes of the events; services/data_hub/views.py renders and serves
the views; services/data_hub/segments.py scores RFM and lists segments.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.data_hub import domain
from services.kit import dialect_of, fetch

metadata = MetaData()

SET_NAMES = ("a", "b")

#: A transaction row's key: the activity windows' order, the id last (insert-if-absent on it).
TRANSACTION_KEY = ("customer_id", "post_us", "transaction_id")


@dataclass(frozen=True)
class Tables:
    """One projection table set."""

    name: str
    customers: Table
    holdings: Table
    transactions: Table
    products: Table
    rfm: Table


def _customers_table(p: str) -> Table:
    return Table(
        f"{p}customers",
        metadata,
        Column("customer_id", String(64), primary_key=True),
        Column("registered", Boolean, nullable=False, default=False),
        Column("customer_version", BigInteger, nullable=False, default=0),
        Column("status", Integer, nullable=False, default=0),
        Column("kyc_verified", Boolean, nullable=False, default=False),
        Column("risk_tolerance", Integer, nullable=False, default=0),
        Column("risk_expire_us", BigInteger, nullable=True),
        Column("birth_year", Integer, nullable=False, default=0),
        Column("full_name_masked", String(200), nullable=False, default=""),
        Column("national_id_masked", String(64), nullable=False, default=""),
        Column("mobile_masked", String(64), nullable=False, default=""),
        Column("email_masked", String(200), nullable=False, default=""),
        Column("create_us", BigInteger, nullable=True),
        Column("last_event_us", BigInteger, nullable=False, default=0),
        Column("last_txn_us", BigInteger, nullable=True),
        Column("as_of_us", BigInteger, nullable=False, default=0),
        Column("r", Integer, nullable=False, default=0),
        Column("f", Integer, nullable=False, default=0),
        Column("m", Integer, nullable=False, default=0),
        Column("rfm_us", BigInteger, nullable=True),
        Column("segment", Integer, nullable=False, default=domain.SEGMENT_UNSCORED),
        Column("lifecycle_stage", Integer, nullable=False, default=domain.STAGE_PROSPECT),
        Column("churn_score", Float, nullable=False, default=0.0),
        Column("doc", LargeBinary, nullable=True),
        Column("version", BigInteger, nullable=False, default=0),
        Column("published_version", BigInteger, nullable=False, default=0),
        Column("pending_publish", Boolean, nullable=False, default=False),
        Column("dirty", Boolean, nullable=False, default=True),
        Column("change_seq", BigInteger, nullable=False, default=1),
        Column("update_us", BigInteger, nullable=False, default=0),
        Index(f"ix_{p}customers_segment", "segment", "customer_id"),
        Index(f"ix_{p}customers_stage", "lifecycle_stage"),
        Index(f"ix_{p}customers_dirty", "dirty"),
        Index(f"ix_{p}customers_pending", "pending_publish"),
    )


def _make_set(name: str) -> Tables:
    p = f"dh_{name}_"
    customers = _customers_table(p)
    holdings = Table(
        f"{p}holdings",
        metadata,
        Column("subscription_id", String(64), primary_key=True),
        Column("customer_id", String(64), nullable=False),
        Column("product_id", String(64), nullable=False, default=""),
        Column("product_type", Integer, nullable=False, default=0),
        Column("currency", String(3), nullable=False, default=""),
        Column("balance_micros", BigInteger, nullable=False, default=0),
        Column("state", Integer, nullable=False, default=domain.HOLDING_OPEN),
        Column("open_us", BigInteger, nullable=True),
        Column("close_us", BigInteger, nullable=True),
        Column("version", BigInteger, nullable=False, default=0),
        Index(f"ix_{p}holdings_customer", "customer_id"),
    )
    transactions = Table(
        f"{p}transactions",
        metadata,
        Column("transaction_id", String(64), nullable=False),
        Column("customer_id", String(64), nullable=False),
        Column("subscription_id", String(64), nullable=False),
        Column("direction", Integer, nullable=False),
        Column("amount_micros", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("post_us", BigInteger, nullable=False),
        # One index, the activity windows' (migration 0005, ADR 0049); the id makes it unique.
        PrimaryKeyConstraint(*TRANSACTION_KEY, name=f"{p}transactions_pkey"),
    )
    products = Table(
        f"{p}products",
        metadata,
        Column("product_id", String(64), primary_key=True),
        Column("display_name", String(200), nullable=False, default=""),
        Column("type", Integer, nullable=False, default=0),
        Column("risk_level", Integer, nullable=False, default=0),
        Column("state", Integer, nullable=False, default=0),
        Column("min_age", Integer, nullable=False, default=0),
        Column("max_age", Integer, nullable=False, default=0),
        Column("version", BigInteger, nullable=False, default=0),
    )
    rfm = Table(
        f"{p}rfm",
        metadata,
        Column("customer_id", String(64), primary_key=True),
        Column("r", Integer, nullable=False),
        Column("f", Integer, nullable=False),
        Column("m", Integer, nullable=False),
    )
    return Tables(name, customers, holdings, transactions, products, rfm)


SETS: dict[str, Tables] = {name: _make_set(name) for name in SET_NAMES}

#: One row (id=1): which set serves, when segments were last refreshed, the last rebuild.
state = Table(
    "dh_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("active", String(8), nullable=False),
    Column("refresh_us", BigInteger, nullable=True),
    Column("rebuild_us", BigInteger, nullable=True),
    Column("rebuilds", Integer, nullable=False, default=0),
)


#: Monthly point-in-time feature snapshots (services/data_hub/snapshots.py): one row per
#: customer and month end, written once, never updated. Outside the blue/green sets: a snapshot is
#: a function of the events up to its date, the same whichever set replayed them.
feature_snapshots = Table(
    "dh_feature_snapshots",
    metadata,
    Column("as_of_us", BigInteger, primary_key=True),
    Column("customer_id", String(64), primary_key=True),
    Column("feature_version", Integer, nullable=False),
    Column("features", String, nullable=False),  # JSON array, features.NAMES order
    Column("rules_churn", Float, nullable=False),  # the rules' churn score at that date
    Column("held", String, nullable=False),  # JSON array of the product ids held (open)
    Column("eligible", String, nullable=False),  # JSON array: eligible, not held
    Column("rules_offers", String, nullable=False),  # JSON array: the rules' top offers, in order
)


def other(name: str) -> str:
    return "b" if name == "a" else "a"


# Statements are built once per (table set, dialect, …) and reused, lists of keys passed at
# execution (kit ``in_list``): building a statement and computing its cache key cost far more
# client CPU than running it (~3 ms per live batch for the two activity aggregates alone).
built = functools.lru_cache(maxsize=64)


@built
def _state_query(dialect: str, lock: str | None) -> Any:
    stmt = select(state).where(state.c.id == 1)
    if lock and dialect == "postgresql":
        stmt = stmt.with_for_update(read=lock == "share")
    return stmt


async def read_state(session: AsyncSession, *, lock: str | None = None) -> dict[str, Any]:
    """The state row; ``lock='share'`` / ``'update'`` takes a row lock on PostgreSQL."""
    rows = await fetch(session, _state_query(dialect_of(session), lock))  # (asyncpg in a live batch, ADR 0045)
    row = rows[0] if rows else None
    if row is None:
        raise RuntimeError("dh_state is empty: run the data hub migrations")
    return dict(row)


async def active_tables(session: AsyncSession, *, lock: str | None = None) -> Tables:
    return SETS[(await read_state(session, lock=lock))["active"]]


# --------------------------------------------------------------------------------------------
# Rebuild: empty the idle set, carry the view versions over before the flip
# --------------------------------------------------------------------------------------------


async def truncate(session: AsyncSession, t: Tables) -> None:
    for table in (t.transactions, t.holdings, t.customers, t.products, t.rfm):
        await session.execute(delete(table))


async def carry_versions(session: AsyncSession, new: Tables, old: Tables) -> None:
    """Before a flip: new view versions continue above the old ones, and everything republishes."""
    n, o = new.customers, old.customers
    older = select(o.c.version).where(o.c.customer_id == n.c.customer_id).scalar_subquery()
    await session.execute(
        update(n).values(version=func.coalesce(older, 0) + n.c.version, pending_publish=True, published_version=0)
    )
