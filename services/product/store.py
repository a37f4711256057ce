"""Tables and queries of the product service (SQLAlchemy 2, PostgreSQL or SQLite).

Money columns are ``BIGINT`` minor units plus a currency code: never floats, never NUMERIC
arithmetic in Python. The balance changes only through :func:`apply_posting`, a single
conditional ``UPDATE ... WHERE balance_minor >= :amount RETURNING`` — on PostgreSQL the row lock
plus the re-evaluated WHERE clause make concurrent debits serialise without ever overdrawing;
SQLite has one writer at a time anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit import BigIntPK
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


async def list_transactions(
    session: AsyncSession, subscription_id: str, *, before: int | None, limit: int
) -> list[TransactionRow]:
    """Newest first."""
    query = select(TransactionRow).where(TransactionRow.subscription_id == subscription_id)
    if before is not None:
        query = query.where(TransactionRow.seq < before)
    query = query.order_by(TransactionRow.seq.desc()).limit(limit)
    return list((await session.scalars(query)).all())


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
