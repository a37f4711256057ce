"""Tables and queries of the product service (SQLAlchemy 2, PostgreSQL or SQLite).

Money columns are ``BIGINT`` minor units plus a currency code: never floats, never NUMERIC
arithmetic in Python. The balance changes only through :func:`apply_posting`, a single
conditional ``UPDATE ... WHERE balance_minor >= :amount RETURNING`` — on PostgreSQL the row lock
plus the re-evaluated WHERE clause make concurrent debits serialise without ever overdrawing;
SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    exists,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import BigIntPK, Reader, Tx, first_or_replay
from services.product.domain import ACTIVE, OPEN


class ProductBase(DeclarativeBase):
    """The product service's own tables (the kit's outbox is created by the same migration)."""


class ProductRow(ProductBase):
    __tablename__ = "products"

    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[int] = mapped_column(Integer)
    risk_level: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    min_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    term_months: Mapped[int] = mapped_column(Integer)
    annual_rate_bps: Mapped[int] = mapped_column(Integer)
    min_age: Mapped[int] = mapped_column(Integer)
    max_age: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    publish_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SubscriptionRow(ProductBase):
    __tablename__ = "subscriptions"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(64))
    product_type: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    # Deposits and wealth holdings: the balance may never go below zero (checked in the UPDATE).
    no_overdraft: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    close_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_subscriptions_customer", "customer_id", "seq"),)


class TransactionRow(ProductBase):
    __tablename__ = "transactions"

    seq: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(64), unique=True)
    subscription_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(64))
    direction: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    balance_after_minor: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(200), default="")
    post_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_transactions_subscription", "subscription_id", "seq"),)


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------
# idempotency
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# products, subscriptions, transactions
# ------------------------------------------------------------------------------------------


async def get_product(session: AsyncSession, product_id: str) -> ProductRow | None:
    return await session.get(ProductRow, product_id)


_PRODUCTS: Table = ProductRow.__table__  # type: ignore[assignment]
#: The product is (still) active: the guard a new subscription's rows are written under
#: (:func:`services.kit.guard_staged`; its parameter ``g_product_id``).
PRODUCT_IS_ACTIVE = exists(
    select(_PRODUCTS.c.product_id).where(
        _PRODUCTS.c.product_id == bindparam("g_product_id"), _PRODUCTS.c.state == bindparam("g_active", ACTIVE)
    )
)


async def list_products(session: AsyncSession, *, after: str, limit: int, type_: int, state: int) -> list[ProductRow]:
    query = select(ProductRow).where(ProductRow.product_id > after).order_by(ProductRow.product_id).limit(limit)
    if type_:
        query = query.where(ProductRow.type == type_)
    if state:
        query = query.where(ProductRow.state == state)
    return list((await session.scalars(query)).all())


async def get_subscription(session: AsyncSession, subscription_id: str) -> SubscriptionRow | None:
    query = select(SubscriptionRow).where(SubscriptionRow.subscription_id == subscription_id)
    # populate_existing: a re-read after a refused conditional UPDATE must see the database, not the identity map
    return (await session.scalars(query.execution_options(populate_existing=True))).first()


async def list_subscriptions(
    session: AsyncSession, customer_id: str, *, after: int, limit: int
) -> list[SubscriptionRow]:
    query = (
        select(SubscriptionRow)
        .where(SubscriptionRow.customer_id == customer_id, SubscriptionRow.seq > after)
        .order_by(SubscriptionRow.seq)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


class ProductRecord(NamedTuple):
    """A ``products`` row read with Core (:class:`services.kit.Reader`): :class:`ProductRow`'s
    columns by the same names, no ORM object (ADR 0029)."""

    product_id: str
    display_name: str
    description: str
    type: int
    risk_level: int
    state: int
    currency: str
    min_minor: int | None
    max_minor: int | None
    term_months: int
    annual_rate_bps: int
    min_age: int
    max_age: int
    version: int
    create_time: datetime
    update_time: datetime
    publish_time: datetime | None
    retire_time: datetime | None


class TransactionRecord(NamedTuple):
    """A ``transactions`` row read with Core: :class:`TransactionRow`'s columns by name."""

    seq: int
    transaction_id: str
    subscription_id: str
    customer_id: str
    direction: int
    currency: str
    amount_minor: int
    balance_after_minor: int
    description: str
    post_time: datetime


def _columns(table: Any, record: type[Any]) -> list[Any]:
    return [table.c[name] for name in record._fields]


_products, _subscriptions, _transactions = ProductRow.__table__, SubscriptionRow.__table__, TransactionRow.__table__
_PRODUCT = select(*_columns(_products, ProductRecord)).where(_products.c.product_id == bindparam("product_id"))
_OWNER = select(_subscriptions.c.customer_id).where(_subscriptions.c.subscription_id == bindparam("subscription_id"))


@functools.lru_cache(maxsize=4)
def _transactions_query(before: bool) -> Any:
    t = _transactions.c
    query = select(*_columns(_transactions, TransactionRecord)).where(t.subscription_id == bindparam("subscription_id"))
    if before:
        query = query.where(t.seq < bindparam("before", type_=BigInteger))
    return query.order_by(t.seq.desc()).limit(bindparam("limit", type_=BigInteger))


#: A product by id (``product_id``), every column of :class:`ProductRecord`.
PRODUCT_BY_ID = _PRODUCT
#: The ``products`` columns of :class:`ProductRecord`, in its order.
PRODUCT_COLUMNS = _columns(_products, ProductRecord)


async def read_product(reader: Reader, product_id: str) -> ProductRecord | None:
    row = await reader.first(_PRODUCT, {"product_id": product_id})
    return ProductRecord(*row) if row is not None else None


async def read_owner(reader: Reader, subscription_id: str) -> str | None:
    """The customer holding a subscription, or None if there is no such subscription."""
    row = await reader.first(_OWNER, {"subscription_id": subscription_id})
    return row[0] if row is not None else None


async def read_transactions(
    reader: Reader, subscription_id: str, *, before: int | None, limit: int
) -> list[TransactionRecord]:
    """Newest first."""
    params: dict[str, object] = {"subscription_id": subscription_id, "limit": limit}
    if before is not None:
        params["before"] = before
    rows = await reader.all(_transactions_query(before is not None), params)
    return [TransactionRecord(*row) for row in rows]


class Posted(NamedTuple):
    """The subscription as a posting left it (the conditional UPDATE's RETURNING)."""

    subscription_id: str
    customer_id: str
    product_id: str
    product_type: int
    currency: str
    balance_minor: int
    version: int


SUBSCRIPTIONS: Table = SubscriptionRow.__table__  # type: ignore[assignment]
TRANSACTIONS: Table = TransactionRow.__table__  # type: ignore[assignment]
_S = SUBSCRIPTIONS.c
_DELTA = bindparam("p_delta", type_=BigInteger())
#: Built once (Core, cached compiled form): the posting rules and the balance move in one statement.
_APPLY_POSTING = (
    update(SUBSCRIPTIONS)
    .where(
        _S.subscription_id == bindparam("p_subscription"),
        _S.customer_id == bindparam("p_customer"),
        _S.state == OPEN,
        _S.currency == bindparam("p_currency"),
        (_S.no_overdraft.is_(False)) | (_S.balance_minor + _DELTA >= 0),
    )
    .values(balance_minor=_S.balance_minor + _DELTA, version=_S.version + 1, update_time=bindparam("p_at"))
    .returning(
        _S.subscription_id, _S.customer_id, _S.product_id, _S.product_type, _S.currency, _S.balance_minor, _S.version
    )
)


async def apply_posting(
    tx: Tx, subscription_id: str, customer_id: str, currency: str, delta_minor: int, at: datetime
) -> Posted | None:
    """Move the balance by ``delta_minor`` atomically; the subscription after it, or None if refused.

    Refused when the subscription is not this customer's, not open, in another currency or — for
    no-overdraft subscriptions — when the balance would go below zero. The check and the change
    are one statement, so two concurrent debits can never both pass on a stale balance.
    """
    params = {"p_subscription": subscription_id, "p_customer": customer_id, "p_currency": currency}
    # (the command port's replay read rides in the same statement: run_core(fold_replay=True))
    row = await first_or_replay(tx, _APPLY_POSTING, {**params, "p_delta": delta_minor, "p_at": at})
    return Posted(*row) if row is not None else None


class PostingState(NamedTuple):
    """What says why a posting was refused (:func:`posting_state`)."""

    customer_id: str
    currency: str
    balance_minor: int
    product_type: int
    state: int


_POSTING_STATE = select(_S.customer_id, _S.currency, _S.balance_minor, _S.product_type, _S.state).where(
    _S.subscription_id == bindparam("subscription_id")
)


async def posting_state(tx: Tx, subscription_id: str) -> PostingState | None:
    """The subscription as it is now (a refused posting's explanation), or None."""
    row = await tx.first(_POSTING_STATE, {"subscription_id": subscription_id})
    return PostingState(*row) if row is not None else None


def transaction_values(
    transaction_id: str, posted: Posted, direction: int, amount_minor: int, description: str, at: datetime
) -> dict[str, Any]:
    """The ledger row of a posting (for :func:`services.kit.stage_insert` into :data:`TRANSACTIONS`)."""
    return {
        "transaction_id": transaction_id,
        "subscription_id": posted.subscription_id,
        "customer_id": posted.customer_id,
        "direction": direction,
        "currency": posted.currency,
        "amount_minor": amount_minor,
        "balance_after_minor": posted.balance_minor,
        "description": description,
        "post_time": at,
    }


def subscription_values(row: SubscriptionRow) -> dict[str, Any]:
    """A new subscription's columns (for :func:`services.kit.stage_insert` into :data:`SUBSCRIPTIONS`)."""
    return {column.key: getattr(row, column.key) for column in SUBSCRIPTIONS.columns if column.key != "seq"}
