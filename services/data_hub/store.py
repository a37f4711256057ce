"""The hub's projection: tables (SQLAlchemy Core), batch-apply, materialize, segments.

Two identical table sets, ``dh_a_*`` and ``dh_b_*`` (blue/green), both created by Alembic;
``dh_state.active`` names the one that serves. Live events go to the active set; the rebuild
command replays from offset 0 into the other one and then flips ``active`` (services/data_hub/
rebuild.py). Per set:

- ``customers``: the customer snapshot (masked), freshness, derived columns (segment, stage,
  churn score, RFM) and the rendered view document ``doc`` with its ``version``;
- ``holdings``: one row per subscription (latest version wins);
- ``transactions``: one row per posted transaction (insert-only, id is the key);
- ``products``: the replicated catalogue (latest version wins);
- ``rfm``: scratch table of the last RefreshSegments run.

Applying events only writes *facts* and marks the customer ``dirty`` (bumping ``change_seq``);
:func:`materialize` turns dirty facts into the view (the domain rules) and bumps ``version``
when the document changed; :func:`pending_views` feeds the debounced publisher. Every fact
update is commutative (max version wins, inserts are keyed), so any arrival order converges.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import money_pb2
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bank.customer.v1 import events_pb2 as customer_events
from bank.datahub.v1 import datahub_pb2
from bank.product.v1 import events_pb2 as product_events
from services.data_hub import domain
from services.data_hub.domain import DAY_US, MICROS, Rules
from services.kit.db import bulk_insert, bulk_update, dialect_of, in_list, is_postgres
from services.kit.events import ReceivedEvent

metadata = MetaData()

SET_NAMES = ("a", "b")

#: A rendered view on its way to the view topic: (customer_id, doc, version, update_us).
View = tuple[str, bytes, int, int]


@dataclass(frozen=True)
class Tables:
    """One projection table set."""

    name: str
    customers: Table
    holdings: Table
    transactions: Table
    products: Table
    rfm: Table


def _make_set(name: str) -> Tables:
    p = f"dh_{name}_"
    customers = Table(
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
        Column("transaction_id", String(64), primary_key=True),
        Column("customer_id", String(64), nullable=False),
        Column("subscription_id", String(64), nullable=False),
        Column("direction", Integer, nullable=False),
        Column("amount_micros", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("post_us", BigInteger, nullable=False),
        Index(f"ix_{p}transactions_customer_time", "customer_id", "post_us"),
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


def other(name: str) -> str:
    return "b" if name == "a" else "a"


# Statements are built once per (table set, dialect, …) and reused, lists of keys passed at
# execution (kit ``in_list``): building a statement and computing its cache key cost far more
# client CPU than running it (~3 ms per live batch for the two activity aggregates alone).
_built = functools.lru_cache(maxsize=64)


@_built
def _state_query(dialect: str, lock: str | None) -> Any:
    stmt = select(state).where(state.c.id == 1)
    if lock and dialect == "postgresql":
        stmt = stmt.with_for_update(read=lock == "share")
    return stmt


async def read_state(session: AsyncSession, *, lock: str | None = None) -> dict[str, Any]:
    """The state row; ``lock='share'`` / ``'update'`` takes a row lock on PostgreSQL."""
    row = (await session.execute(_state_query(dialect_of(session), lock))).mappings().first()
    if row is None:
        raise RuntimeError("dh_state is empty: run the data hub migrations")
    return dict(row)


async def active_tables(session: AsyncSession, *, lock: str | None = None) -> Tables:
    return SETS[(await read_state(session, lock=lock))["active"]]


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


def ts_us(ts: Timestamp) -> int | None:
    """Epoch microseconds of a Timestamp (None when unset)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.seconds * MICROS + ts.nanos // 1000


def us_ts(us: int | None) -> Timestamp | None:
    if us is None:
        return None
    return Timestamp(seconds=us // MICROS, nanos=(us % MICROS) * 1000)


def money_micros(m: money_pb2.Money) -> int:
    return int(m.units) * MICROS + int(m.nanos) // 1000


def micros_money(micros: int, currency: str) -> money_pb2.Money:
    units, rest = divmod(abs(micros), MICROS)
    sign = -1 if micros < 0 else 1
    return money_pb2.Money(currency_code=currency, units=sign * units, nanos=sign * rest * 1000)


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * MICROS)


# --------------------------------------------------------------------------------------------
# Batch-apply: events are folded in memory, then written with a handful of bulk statements
# --------------------------------------------------------------------------------------------


class BadEvent(ValueError):
    """An event whose content can never be applied (goes to the DLQ after retries)."""


_CUSTOMER_EVENTS = (
    customer_events.CustomerCreated,
    customer_events.CustomerUpdated,
    customer_events.CustomerVerified,
    customer_events.CustomerRejected,
    customer_events.CustomerRiskAssessed,
    customer_events.CustomerClosed,
)


_CUSTOMER, _PRODUCT, _SUBSCRIPTION, _TRANSACTION = range(4)
_EVENT_KINDS: dict[type, int] = {
    **dict.fromkeys(_CUSTOMER_EVENTS, _CUSTOMER),
    product_events.ProductPublished: _PRODUCT,
    product_events.ProductRetired: _PRODUCT,
    product_events.SubscriptionOpened: _SUBSCRIPTION,
    product_events.SubscriptionClosed: _SUBSCRIPTION,
    product_events.TransactionPosted: _TRANSACTION,
}


@dataclass
class _CustomerPatch:
    version: int = 0
    snapshot: dict[str, Any] | None = None
    last_event_us: int = 0
    last_txn_us: int | None = None


@dataclass
class _HoldingPatch:
    customer_id: str
    version: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    open_us: int | None = None


@dataclass
class Batch:
    """Facts from a batch of events, folded (max version wins) before one bulk write."""

    customers: dict[str, _CustomerPatch] = field(default_factory=dict)
    holdings: dict[str, _HoldingPatch] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: int = 0

    def __bool__(self) -> bool:
        return self.events > 0

    def _customer(self, customer_id: str, event_us: int) -> _CustomerPatch:
        if not customer_id:
            raise BadEvent("event without customer_id")
        patch = self.customers.get(customer_id)
        if patch is None:  # (not setdefault: it would build a patch for every event)
            patch = self.customers[customer_id] = _CustomerPatch()
        if event_us > patch.last_event_us:
            patch.last_event_us = event_us
        return patch

    def add(self, event: ReceivedEvent) -> None:
        msg = event.message
        # (dispatch on the exact class: isinstance on protobuf classes goes through ABCMeta)
        kind = _EVENT_KINDS.get(type(msg))
        if kind is None:
            return  # an event type the hub does not project: applied as a no-op
        occur_time = getattr(msg, "occur_time", None)
        occur = ts_us(occur_time) if occur_time is not None else None
        event_us = occur or int(event.time.timestamp() * MICROS)
        if kind == _TRANSACTION:
            self._add_transaction(msg, event_us)  # type: ignore[arg-type]
        elif kind == _SUBSCRIPTION:
            self._add_subscription(msg, event_us)  # type: ignore[arg-type]
        elif kind == _CUSTOMER:
            self._add_customer(msg, event_us)
        else:
            self._add_product(msg)  # type: ignore[arg-type]
        self.events += 1

    def _add_customer(self, msg: Message, event_us: int) -> None:
        snap: customer_events.CustomerSnapshot = msg.customer  # type: ignore[attr-defined]
        customer_id = msg.customer_id or snap.customer_id  # type: ignore[attr-defined]
        version = int(msg.version or snap.version)  # type: ignore[attr-defined]
        patch = self._customer(customer_id, event_us)
        if version > patch.version:
            patch.version = version
            create_us = ts_us(snap.create_time)
            if create_us is None and isinstance(msg, customer_events.CustomerCreated):
                create_us = event_us
            patch.snapshot = {
                "registered": True,
                "customer_version": version,
                "status": int(snap.status),
                "kyc_verified": bool(snap.kyc_verified),
                "risk_tolerance": int(snap.risk_tolerance),
                "risk_expire_us": ts_us(snap.risk_tolerance_expire_time),
                "birth_year": int(snap.birth_year),
                "full_name_masked": snap.full_name_masked,
                "national_id_masked": snap.national_id_masked,
                "mobile_masked": snap.mobile_masked,
                "email_masked": snap.email_masked,
                "create_us": create_us,
            }

    def _add_product(self, msg: product_events.ProductPublished | product_events.ProductRetired) -> None:
        p = msg.product
        product_id = msg.product_id or p.product_id
        if not product_id:
            raise BadEvent("product event without product_id")
        version = int(msg.version or p.version)
        current = self.products.get(product_id)
        if current is not None and current["version"] >= version:
            return
        state = int(p.state) or (domain.PRODUCT_ACTIVE if isinstance(msg, product_events.ProductPublished) else 3)
        self.products[product_id] = {
            "product_id": product_id,
            "display_name": p.display_name,
            "type": int(p.type),
            "risk_level": int(p.risk_level),
            "state": state,
            "min_age": int(p.eligibility.min_age),
            "max_age": int(p.eligibility.max_age),
            "version": version,
        }

    def _holding(self, subscription_id: str, customer_id: str) -> _HoldingPatch:
        if not subscription_id:
            raise BadEvent("event without subscription_id")
        patch = self.holdings.get(subscription_id)
        if patch is None:
            patch = self.holdings[subscription_id] = _HoldingPatch(customer_id)
        return patch

    def _add_subscription(
        self, msg: product_events.SubscriptionOpened | product_events.SubscriptionClosed, event_us: int
    ) -> None:
        s = msg.subscription
        customer_id = msg.customer_id or s.customer_id
        self._customer(customer_id, event_us)
        patch = self._holding(msg.subscription_id or s.subscription_id, customer_id)
        opened = ts_us(s.create_time) or (event_us if isinstance(msg, product_events.SubscriptionOpened) else None)
        if opened is not None:
            patch.open_us = opened if patch.open_us is None else min(patch.open_us, opened)
        version = int(msg.version or s.version)
        if version > patch.version:
            patch.version = version
            balance = s.balance if s.HasField("balance") else s.amount
            closed = isinstance(msg, product_events.SubscriptionClosed) or s.state == domain.HOLDING_CLOSED
            patch.fields = {
                "product_id": s.product_id,
                "product_type": int(s.product_type),
                "currency": balance.currency_code or s.amount.currency_code,
                "balance_micros": money_micros(balance),
                "state": domain.HOLDING_CLOSED if closed else domain.HOLDING_OPEN,
                "close_us": (ts_us(s.close_time) or event_us) if closed else None,
            }

    def _add_transaction(self, msg: product_events.TransactionPosted, event_us: int) -> None:
        # The hot path of a bulk ingest: each protobuf field is read once.
        t = msg.transaction
        customer_id = msg.customer_id or t.customer_id
        cpatch = self._customer(customer_id, event_us)
        transaction_id = t.transaction_id
        if not transaction_id:
            raise BadEvent("transaction without transaction_id")
        direction = t.direction
        if direction != domain.DIRECTION_CREDIT and direction != domain.DIRECTION_DEBIT:
            raise BadEvent("transaction without a direction")
        amount = t.amount
        currency = amount.currency_code
        if len(currency) != 3:
            raise BadEvent("transaction amount without a currency")
        subscription_id = msg.subscription_id or t.subscription_id
        post_us = ts_us(t.post_time) or event_us
        if cpatch.last_txn_us is None or post_us > cpatch.last_txn_us:
            cpatch.last_txn_us = post_us
        self.transactions[transaction_id] = {
            "transaction_id": transaction_id,
            "customer_id": customer_id,
            "subscription_id": subscription_id,
            "direction": int(direction),
            "amount_micros": money_micros(amount),
            "currency": currency,
            "post_us": post_us,
        }
        patch = self._holding(subscription_id, customer_id)
        version = int(msg.version)
        if version > patch.version:
            patch.version = version
            fields = patch.fields
            balance = t.balance_after
            fields["product_id"] = msg.product_id or fields.get("product_id", "")
            fields["product_type"] = int(msg.product_type) or fields.get("product_type", 0)
            fields["currency"] = balance.currency_code or currency
            fields["balance_micros"] = money_micros(balance)


def _lockable(dialect: str, stmt: Any) -> Any:
    # Several hub replicas may touch one customer (its topics' partitions can go to different
    # members): lock the rows read for the merge. SQLite has one writer anyway.
    return stmt.with_for_update() if dialect == "postgresql" else stmt


@_built
def _merge_query(t: Tables, dialect: str, what: str) -> Any:
    """The rows a batch merges into, by key (``ids``), locked."""
    if what == "customers":
        c = t.customers
        cols = (c.c.customer_id, c.c.customer_version, c.c.last_event_us, c.c.last_txn_us, c.c.as_of_us)
        stmt = select(*cols).where(in_list(dialect, c.c.customer_id, "ids")).order_by(c.c.customer_id)
    elif what == "holdings":
        h = t.holdings
        stmt = select(h).where(in_list(dialect, h.c.subscription_id, "ids")).order_by(h.c.subscription_id)
    else:
        p = t.products
        stmt = select(p.c.product_id, p.c.version).where(in_list(dialect, p.c.product_id, "ids"))
    return _lockable(dialect, stmt)


_CUSTOMER_SNAPSHOT_COLUMNS = (
    "registered",
    "customer_version",
    "status",
    "kyc_verified",
    "risk_tolerance",
    "risk_expire_us",
    "birth_year",
    "full_name_masked",
    "national_id_masked",
    "mobile_masked",
    "email_masked",
    "create_us",
)
_CUSTOMER_TIME_COLUMNS = ("last_event_us", "as_of_us", "last_txn_us")
_HOLDING_COLUMNS = ("product_id", "product_type", "currency", "balance_micros", "state", "close_us")


async def apply_batch(session: AsyncSession, t: Tables, batch: Batch) -> bool:
    """Write a folded batch into table set ``t`` (idempotent); True if the catalogue changed."""
    catalogue_changed = await _apply_products(session, t, batch)
    await _apply_customers(session, t, batch)
    await _apply_holdings(session, t, batch)
    if batch.transactions:
        await bulk_insert(
            session, t.transactions, list(batch.transactions.values()), skip_conflicts_on=["transaction_id"]
        )
    if catalogue_changed:
        # Offers depend on the catalogue: every view must be re-rendered.
        await session.execute(update(t.customers).values(dirty=True, change_seq=t.customers.c.change_seq + 1))
    return catalogue_changed


async def _apply_customers(session: AsyncSession, t: Tables, batch: Batch) -> None:
    if not batch.customers:
        return
    c = t.customers
    ids = sorted(batch.customers)
    existing = {
        row.customer_id: row
        for row in (await session.execute(_merge_query(t, dialect_of(session), "customers"), {"ids": ids})).all()
    }
    inserts: list[dict[str, Any]] = []
    snapshot_updates: list[dict[str, Any]] = []
    time_updates: list[dict[str, Any]] = []
    for cid in ids:
        patch = batch.customers[cid]
        row = existing.get(cid)
        if row is None:
            values: dict[str, Any] = {
                "customer_id": cid,
                "last_event_us": patch.last_event_us,
                "as_of_us": patch.last_event_us,
                "last_txn_us": patch.last_txn_us,
                "dirty": True,
                "change_seq": 1,
            }
            if patch.snapshot is not None:
                values.update(patch.snapshot)
            inserts.append(values)
            continue
        last_txn = row.last_txn_us
        if patch.last_txn_us is not None:
            last_txn = patch.last_txn_us if last_txn is None else max(last_txn, patch.last_txn_us)
        times = {
            "b_id": cid,
            "b_last_event_us": max(row.last_event_us, patch.last_event_us),
            "b_as_of_us": max(row.as_of_us, patch.last_event_us),
            "b_last_txn_us": last_txn,
        }
        if patch.snapshot is not None and patch.version > row.customer_version:
            snapshot_updates.append({**times, **{f"b_{k}": v for k, v in patch.snapshot.items()}})
        else:
            time_updates.append(times)
    await bulk_insert(session, c, _fill_defaults(c, inserts))
    times_types = {"b_id": c.c.customer_id.type, **{f"b_{k}": c.c[k].type for k in _CUSTOMER_TIME_COLUMNS}}

    def time_values(src: Any) -> dict[str, Any]:
        return {
            **{k: getattr(src.c, f"b_{k}") for k in _CUSTOMER_TIME_COLUMNS},
            "dirty": True,
            "change_seq": c.c.change_seq + 1,
        }

    def by_id(src: Any) -> list[Any]:
        return [c.c.customer_id == src.c.b_id]

    await bulk_update(session, c, time_updates, times_types, where=by_id, values=time_values)
    await bulk_update(
        session,
        c,
        snapshot_updates,
        {**times_types, **{f"b_{k}": c.c[k].type for k in _CUSTOMER_SNAPSHOT_COLUMNS}},
        where=by_id,
        values=lambda src: {**time_values(src), **{k: getattr(src.c, f"b_{k}") for k in _CUSTOMER_SNAPSHOT_COLUMNS}},
    )


def _fill_defaults(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bulk inserts need the same keys in every row: fill the columns' Python defaults."""
    defaults: dict[str, Any] = {}
    for col in table.columns:
        arg = getattr(col.default, "arg", None)
        if arg is not None and not callable(arg):
            defaults[col.name] = arg
    keys = set().union(*rows)
    return [{**defaults, **{k: None for k in keys if k not in defaults}, **row} for row in rows]


async def _apply_holdings(session: AsyncSession, t: Tables, batch: Batch) -> None:
    if not batch.holdings:
        return
    h = t.holdings
    ids = sorted(batch.holdings)
    found = await session.execute(_merge_query(t, dialect_of(session), "holdings"), {"ids": ids})
    existing = {row["subscription_id"]: row for row in found.mappings().all()}
    inserts: list[dict[str, Any]] = []
    full_updates: list[dict[str, Any]] = []
    open_updates: list[dict[str, Any]] = []
    for sid in ids:
        patch = batch.holdings[sid]
        row = existing.get(sid)
        if row is None:
            inserts.append(
                {
                    "subscription_id": sid,
                    "customer_id": patch.customer_id,
                    "open_us": patch.open_us,
                    "version": patch.version,
                    **patch.fields,
                }
            )
            continue
        open_us = row["open_us"]
        if patch.open_us is not None:
            open_us = patch.open_us if open_us is None else min(open_us, patch.open_us)
        if patch.version > row["version"] and patch.fields:
            merged = {k: patch.fields.get(k, row[k]) for k in _HOLDING_COLUMNS}
            # A transaction-only patch lacks the state: the row's own values fill what it does not carry.
            values = {"b_id": sid, "b_open_us": open_us, "b_version": patch.version}
            full_updates.append({**values, **{f"b_{k}": v for k, v in merged.items()}})
        elif open_us != row["open_us"]:
            open_updates.append({"b_id": sid, "b_open_us": open_us})
    await bulk_insert(session, h, _fill_defaults(h, inserts))

    def by_id(src: Any) -> list[Any]:
        return [h.c.subscription_id == src.c.b_id]

    await bulk_update(
        session,
        h,
        open_updates,
        {"b_id": h.c.subscription_id.type, "b_open_us": h.c.open_us.type},
        where=by_id,
        values=lambda src: {"open_us": src.c.b_open_us},
    )
    await bulk_update(
        session,
        h,
        full_updates,
        {
            "b_id": h.c.subscription_id.type,
            "b_open_us": h.c.open_us.type,
            "b_version": h.c.version.type,
            **{f"b_{k}": h.c[k].type for k in _HOLDING_COLUMNS},
        },
        where=by_id,
        values=lambda src: {
            "open_us": src.c.b_open_us,
            "version": src.c.b_version,
            **{k: getattr(src.c, f"b_{k}") for k in _HOLDING_COLUMNS},
        },
    )


async def _apply_products(session: AsyncSession, t: Tables, batch: Batch) -> bool:
    if not batch.products:
        return False
    p = t.products
    ids = sorted(batch.products)
    found = await session.execute(_merge_query(t, dialect_of(session), "products"), {"ids": ids})
    existing = {row.product_id: row.version for row in found.all()}
    inserts = [batch.products[i] for i in ids if i not in existing]
    updates = [
        {f"b_{k}": v for k, v in batch.products[i].items()}
        for i in ids
        if i in existing and batch.products[i]["version"] > existing[i]
    ]
    if inserts:
        await session.execute(insert(p), inserts)
    if updates:
        cols = [k for k in batch.products[ids[0]] if k != "product_id"]
        await session.execute(
            update(p)
            .where(p.c.product_id == bindparam("b_product_id"))
            .values(**{k: bindparam(f"b_{k}") for k in cols}),
            updates,
        )
    return bool(inserts or updates)


# --------------------------------------------------------------------------------------------
# Materialize: facts -> domain rules -> the CustomerView document
# --------------------------------------------------------------------------------------------


@_built
def _catalogue_query(t: Tables) -> Any:
    return select(t.products).order_by(t.products.c.product_id)


async def load_catalogue(session: AsyncSession, t: Tables) -> list[domain.Product]:
    rows = (await session.execute(_catalogue_query(t))).mappings().all()
    return [
        domain.Product(
            r["product_id"], r["display_name"], r["type"], r["risk_level"], r["state"], r["min_age"], r["max_age"]
        )
        for r in rows
    ]


@_built
def _activity_queries(t: Tables, dialect: str, cur: str, baseline_days: int, lookback_days: int) -> tuple[Any, Any]:
    """Per customer of ``ids``: counts and sums over the activity windows; net flow per holding."""
    c, x = t.customers, t.transactions

    def within(days: int) -> Any:
        return x.c.post_us > c.c.as_of_us - days * DAY_US

    def count_if(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    def amount_if(cond: Any) -> Any:
        return func.sum(case((and_(cond, x.c.currency == cur), x.c.amount_micros), else_=0))

    base_hi = c.c.as_of_us - 30 * DAY_US
    base_lo = c.c.as_of_us - (30 + baseline_days) * DAY_US
    stmt = (
        select(
            x.c.customer_id,
            count_if(within(30)).label("c30"),
            count_if(within(90)).label("c90"),
            func.count().label("c365"),
            amount_if(within(30)).label("a30"),
            amount_if(within(90)).label("a90"),
            amount_if(literal(True)).label("a365"),
            count_if(and_(x.c.post_us > base_lo, x.c.post_us <= base_hi)).label("base"),
        )
        .select_from(x.join(c, c.c.customer_id == x.c.customer_id))
        .where(in_list(dialect, x.c.customer_id, "ids"), within(365), x.c.post_us <= c.c.as_of_us)
        .group_by(x.c.customer_id)
    )
    flow = (
        select(
            x.c.customer_id,
            x.c.subscription_id,
            func.sum(case((x.c.direction == domain.DIRECTION_CREDIT, x.c.amount_micros), else_=-x.c.amount_micros)),
        )
        .select_from(x.join(c, c.c.customer_id == x.c.customer_id))
        .where(in_list(dialect, x.c.customer_id, "ids"), within(lookback_days))
        .group_by(x.c.customer_id, x.c.subscription_id)
    )
    return stmt, flow


async def _activity(session: AsyncSession, t: Tables, ids: Sequence[str], rules: Rules) -> dict[str, dict[str, Any]]:
    stmt, flow = _activity_queries(
        t, dialect_of(session), rules.reporting_currency, rules.activity_baseline_days, rules.balance_lookback_days
    )
    keys = {"ids": list(ids)}
    result = {row.customer_id: dict(row._mapping) for row in (await session.execute(stmt, keys)).all()}
    for cid, sid, net in (await session.execute(flow, keys)).all():
        result.setdefault(cid, {}).setdefault("flows", {})[sid] = int(net or 0)
    return result


def _facts(row: Any, holdings: list[domain.Holding], act: dict[str, Any]) -> domain.CustomerFacts:
    activity = domain.Activity(
        count_30d=int(act.get("c30") or 0),
        count_90d=int(act.get("c90") or 0),
        count_365d=int(act.get("c365") or 0),
        amount_30d_micros=int(act.get("a30") or 0),
        amount_90d_micros=int(act.get("a90") or 0),
        amount_365d_micros=int(act.get("a365") or 0),
        last_txn_us=row["last_txn_us"],
        count_baseline=int(act.get("base") or 0),
        net_flow_since_cutoff=act.get("flows", {}),
    )
    return domain.CustomerFacts(
        customer_id=row["customer_id"],
        registered=bool(row["registered"]),
        status=row["status"],
        kyc_verified=bool(row["kyc_verified"]),
        risk_tolerance=row["risk_tolerance"],
        risk_tolerance_expire_us=row["risk_expire_us"],
        birth_year=row["birth_year"],
        create_us=row["create_us"],
        as_of_us=row["as_of_us"],
        holdings=holdings,
        activity=activity,
        rfm=(row["r"], row["f"], row["m"]),
    )


def render(row: Any, facts: domain.CustomerFacts, derived: domain.Derived, rules: Rules) -> datahub_pb2.CustomerView:
    """The view document (without ``version``/``update_time``, which are set when served)."""
    cur = rules.reporting_currency
    a = facts.activity
    view = datahub_pb2.CustomerView(
        customer_id=facts.customer_id,
        full_name_masked=row["full_name_masked"],
        national_id_masked=row["national_id_masked"],
        mobile_masked=row["mobile_masked"],
        email_masked=row["email_masked"],
        birth_year=facts.birth_year,
        status=facts.status,  # type: ignore[arg-type]
        kyc_verified=facts.kyc_verified,
        risk_tolerance=facts.risk_tolerance,  # type: ignore[arg-type]
        segment=derived.segment,  # type: ignore[arg-type]
        lifecycle_stage=derived.lifecycle_stage,  # type: ignore[arg-type]
    )
    if (ts := us_ts(facts.risk_tolerance_expire_us)) is not None:
        view.risk_tolerance_expire_time.CopyFrom(ts)
    for h in sorted(facts.holdings, key=lambda h: h.subscription_id):
        holding = view.holdings.add(
            subscription_id=h.subscription_id, product_id=h.product_id, product_type=h.product_type, state=h.state
        )  # type: ignore[arg-type]
        holding.balance.CopyFrom(micros_money(h.balance_micros, h.currency))
        if (ts := us_ts(h.open_us)) is not None:
            holding.open_time.CopyFrom(ts)
    for currency, amount in derived.positions.items():
        view.position.append(micros_money(amount, currency))
    act = view.activity
    act.txn_count_30d, act.txn_count_90d, act.txn_count_365d = a.count_30d, a.count_90d, a.count_365d
    act.txn_amount_30d.CopyFrom(micros_money(a.amount_30d_micros, cur))
    act.txn_amount_90d.CopyFrom(micros_money(a.amount_90d_micros, cur))
    act.txn_amount_365d.CopyFrom(micros_money(a.amount_365d_micros, cur))
    if (ts := us_ts(a.last_txn_us)) is not None:
        act.last_txn_time.CopyFrom(ts)
    r, f, m = facts.rfm
    view.rfm.recency, view.rfm.frequency, view.rfm.monetary = r, f, m
    view.rfm.code = domain.rfm_code(facts.rfm)
    if (ts := us_ts(row["rfm_us"])) is not None and view.rfm.code:
        view.rfm.score_time.CopyFrom(ts)
    view.churn_risk.score = derived.churn.score
    view.churn_risk.reasons.extend(derived.churn.reasons)
    for o in derived.offers:
        view.offers.add(
            product_id=o.product_id,
            score=o.score,
            reasons=o.reasons,
            product_type=o.product_type,  # type: ignore[arg-type]
            display_name=o.display_name,
        )
    if (ts := us_ts(row["last_event_us"] or None)) is not None:
        view.last_event_time.CopyFrom(ts)
    if (ts := us_ts(row["create_us"])) is not None:
        view.customer_create_time.CopyFrom(ts)
    return view


@_built
def _dirty_query(t: Tables, dialect: str, by_ids: bool) -> Any:
    c = t.customers
    stmt = select(c).where(c.c.dirty.is_(True))
    if by_ids:
        stmt = stmt.where(in_list(dialect, c.c.customer_id, "ids"))
    return stmt.order_by(c.c.customer_id).limit(bindparam("limit", type_=Integer))


@_built
def _holdings_of_query(t: Tables, dialect: str) -> Any:
    return select(t.holdings).where(in_list(dialect, t.holdings.c.customer_id, "ids"))


async def materialize(
    session: AsyncSession,
    t: Tables,
    rules: Rules,
    *,
    limit: int = 500,
    catalogue: list[domain.Product] | None = None,
    ids: Sequence[str] | None = None,
    written: list[View] | None = None,
) -> tuple[int, int]:
    """Re-render up to ``limit`` dirty views (only those of ``ids`` if given); returns
    (rendered, changed). The caller commits.

    Optimistic, without row locks while rendering: each row is written back only if it is still
    dirty at the ``change_seq`` that was read. Every fact change bumps ``change_seq`` in the
    transaction that writes the fact, so a render made from facts that changed in the meantime
    (or a row another render already wrote) is dropped and the row stays dirty for the next
    pass — a render never overwrites a newer one, and the consumer's batches never wait for a
    render (they used to queue behind ``FOR UPDATE`` locks held for the whole render).
    """
    c = t.customers
    dialect = dialect_of(session)
    stmt = _dirty_query(t, dialect, ids is not None)
    keys: dict[str, Any] = {"limit": limit} if ids is None else {"limit": limit, "ids": list(ids)}
    rows = (await session.execute(stmt, keys)).mappings().all()
    if not rows:
        return 0, 0
    ids = [r["customer_id"] for r in rows]
    holdings: dict[str, list[domain.Holding]] = {}
    for hr in (await session.execute(_holdings_of_query(t, dialect), {"ids": ids})).mappings().all():
        holdings.setdefault(hr["customer_id"], []).append(
            domain.Holding(
                hr["subscription_id"],
                hr["product_id"],
                hr["product_type"],
                hr["currency"],
                hr["balance_micros"],
                hr["state"],
                hr["open_us"],
                hr["close_us"],
            )
        )
    activity = await _activity(session, t, ids, rules)
    if catalogue is None:
        catalogue = await load_catalogue(session, t)
    stamp = now_us()
    params: list[dict[str, Any]] = []
    changed = 0
    for row in rows:
        facts = _facts(row, holdings.get(row["customer_id"], []), activity.get(row["customer_id"], {}))
        derived = domain.derive(facts, catalogue, rules)
        doc = render(row, facts, derived, rules).SerializeToString(deterministic=True)
        is_changed = doc != row["doc"]
        changed += is_changed
        if written is not None and is_changed:
            # (customer_id, doc, version, update_us) as they will be once committed: the publisher
            # can send them without reading them back (the caller's own transaction holds the rows)
            written.append((row["customer_id"], doc, row["version"] + 1, stamp))
        params.append(
            {
                "b_id": row["customer_id"],
                "b_seq": row["change_seq"],
                "b_doc": doc,
                "b_inc": int(is_changed),
                "b_segment": derived.segment,
                "b_stage": derived.lifecycle_stage,
                "b_churn": derived.churn.score,
                "b_update_us": stamp if is_changed else row["update_us"],
            }
        )
    await bulk_update(
        session,
        c,
        params,
        {
            "b_id": c.c.customer_id.type,
            "b_seq": c.c.change_seq.type,
            "b_doc": c.c.doc.type,
            "b_inc": c.c.version.type,
            "b_segment": c.c.segment.type,
            "b_stage": c.c.lifecycle_stage.type,
            "b_churn": c.c.churn_score.type,
            "b_update_us": c.c.update_us.type,
        },
        where=lambda src: [c.c.customer_id == src.c.b_id, c.c.change_seq == src.c.b_seq, c.c.dirty.is_(True)],
        values=lambda src: {
            "doc": src.c.b_doc,
            "version": c.c.version + src.c.b_inc,
            "pending_publish": case((src.c.b_inc == 1, True), else_=c.c.pending_publish),
            "segment": src.c.b_segment,
            "lifecycle_stage": src.c.b_stage,
            "churn_score": src.c.b_churn,
            "update_us": src.c.b_update_us,
            "dirty": False,
        },
    )
    return len(rows), changed


# --------------------------------------------------------------------------------------------
# RefreshSegments: RFM quintiles over the population, in SQL (NTILE window functions)
# --------------------------------------------------------------------------------------------


async def refresh_rfm(session: AsyncSession, t: Tables, rules: Rules, as_of_us: int) -> int:
    """Score the population with NTILE(5) in SQL; mark every view dirty. Returns customers scored.

    Population: registered ACTIVE customers past the first ``new_customer_days``. Recency orders by
    the last transaction time (later = higher score), frequency by the transaction count over 365
    days, monetary by the open reporting-currency balance (AUM). Ties break by customer_id so the
    quintiles are deterministic.
    """
    c, x, h, q = t.customers, t.transactions, t.holdings, t.rfm
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
    scored = (
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


# --------------------------------------------------------------------------------------------
# Reads (API) and the publisher's queue
# --------------------------------------------------------------------------------------------


def served(doc: bytes, version: int, update_us: int) -> datahub_pb2.CustomerView:
    view = datahub_pb2.CustomerView.FromString(doc)
    view.version = version
    if (ts := us_ts(update_us or None)) is not None:
        view.update_time.CopyFrom(ts)
    return view


@_built
def _view_query(t: Tables) -> Any:
    c = t.customers
    return select(c.c.doc, c.c.version, c.c.update_us).where(c.c.customer_id == bindparam("customer_id"))


async def get_view(session: AsyncSession, t: Tables, customer_id: str) -> datahub_pb2.CustomerView | None:
    row = (await session.execute(_view_query(t), {"customer_id": customer_id})).first()
    if row is None or row.doc is None:
        return None
    return served(row.doc, row.version, row.update_us)


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


@_built
def _pending_query(t: Tables) -> Any:
    c = t.customers
    return (
        select(c.c.customer_id, c.c.doc, c.c.version, c.c.update_us)
        .where(c.c.pending_publish.is_(True), c.c.doc.is_not(None))
        .order_by(c.c.customer_id)
        .limit(bindparam("limit", type_=Integer))
    )


async def pending_views(session: AsyncSession, t: Tables, limit: int) -> list[View]:
    rows = (await session.execute(_pending_query(t), {"limit": limit})).all()
    return [(r.customer_id, r.doc, r.version, r.update_us) for r in rows]


async def mark_published(session: AsyncSession, t: Tables, published: Iterable[tuple[str, int]]) -> None:
    """Clear ``pending_publish`` of the views published at these versions.

    On PostgreSQL rows that a consumer batch holds right now are skipped instead of waited for
    (``FOR UPDATE SKIP LOCKED`` in the same statement; they keep the flag and are published
    again: at-least-once, consumers keep the highest version) — waiting here made the view
    worker and the consumer queue behind each other.
    """
    c = t.customers
    params = [{"b_id": cid, "b_version": v} for cid, v in published]
    if not params:
        return
    pg = is_postgres(session)

    def where(src: Any) -> list[Any]:
        matched = [c.c.customer_id == src.c.b_id, c.c.version == src.c.b_version]
        if pg:
            free = c.alias("free")
            held_elsewhere_skipped = (
                select(free.c.customer_id)
                .where(in_list("postgresql", free.c.customer_id, "guard_ids"))
                .with_for_update(skip_locked=True)
            )
            matched.append(c.c.customer_id.in_(held_elsewhere_skipped))
        return matched

    await bulk_update(
        session,
        c,
        params,
        {"b_id": c.c.customer_id.type, "b_version": c.c.version.type},
        where=where,
        values=lambda src: {"pending_publish": False, "published_version": src.c.b_version},
        params={"guard_ids": [p["b_id"] for p in params]} if pg else None,
    )


async def all_docs(session: AsyncSession, t: Tables) -> dict[str, bytes]:
    """customer_id -> view document (tests and the rebuild's comparison)."""
    c = t.customers
    rows = (await session.execute(select(c.c.customer_id, c.c.doc).order_by(c.c.customer_id))).all()
    return {r.customer_id: r.doc for r in rows}


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
