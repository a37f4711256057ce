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

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import BigIntPK, Reader
from services.product.domain import OPEN


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


async def apply_posting(
    session: AsyncSession, subscription_id: str, delta_minor: int, at: datetime
) -> tuple[int, int] | None:
    """Move the balance by ``delta_minor`` atomically; (balance_after, version) or None if refused.

    Refused when the subscription is not open or — for no-overdraft subscriptions — when the
    balance would go below zero. The check and the change are one statement, so two concurrent
    debits can never both pass on a stale balance.
    """
    stmt = (
        update(SubscriptionRow)
        .where(
            SubscriptionRow.subscription_id == subscription_id,
            SubscriptionRow.state == OPEN,
            (SubscriptionRow.no_overdraft.is_(False)) | (SubscriptionRow.balance_minor + delta_minor >= 0),
        )
        .values(
            balance_minor=SubscriptionRow.balance_minor + delta_minor,
            version=SubscriptionRow.version + 1,
            update_time=at,
        )
        .returning(SubscriptionRow.balance_minor, SubscriptionRow.version)
        .execution_options(synchronize_session=False)
    )
    row = (await session.execute(stmt)).first()
    return (int(row[0]), int(row[1])) if row is not None else None
