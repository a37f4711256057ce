"""Initial schema: products, subscriptions, transactions, idempotency keys and the kit's outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit import create_idempotency_keys_v1, create_outbox_v1, drop_outbox_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 64-bit auto-increment key that SQLite also auto-increments (see services.kit.db.BigIntPK).
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("risk_level", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("min_minor", sa.BigInteger(), nullable=True),
        sa.Column("max_minor", sa.BigInteger(), nullable=True),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("annual_rate_bps", sa.Integer(), nullable=False),
        sa.Column("min_age", sa.Integer(), nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.Column("publish_time", TS, nullable=True),
        sa.Column("retire_time", TS, nullable=True),
    )
    op.create_index("ix_products_state", "products", ["state"])
    op.create_table(
        "subscriptions",
        sa.Column("seq", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(64), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), sa.ForeignKey("products.product_id"), nullable=False),
        sa.Column("product_type", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("no_overdraft", sa.Boolean(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.Column("close_time", TS, nullable=True),
        # The last line of defence behind the conditional UPDATE: a deposit never goes negative.
        sa.CheckConstraint("NOT no_overdraft OR balance_minor >= 0", name="ck_subscriptions_no_overdraft"),
    )
    op.create_index("ix_subscriptions_customer", "subscriptions", ["customer_id", "seq"])
    op.create_table(
        "transactions",
        sa.Column("seq", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("transaction_id", sa.String(64), nullable=False, unique=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_minor", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("post_time", TS, nullable=False),
    )
    op.create_index("ix_transactions_subscription", "transactions", ["subscription_id", "seq"])
    create_idempotency_keys_v1()  # the kit's command port
    # The kit's transactional outbox, created by the kit's own versioned step.
    create_outbox_v1()


def downgrade() -> None:
    drop_outbox_v1()
    for index, table in (
        ("ix_transactions_subscription", "transactions"),
        ("ix_subscriptions_customer", "subscriptions"),
        ("ix_products_state", "products"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("idempotency_keys", "transactions", "subscriptions", "products"):
        op.drop_table(table)
