"""Initial schema: the kit's inbox + aggregate_versions, dh_state, and two projection table sets.

The sets ``dh_a_*`` and ``dh_b_*`` are identical (blue/green): one serves while the rebuild
command replays into the other (see services/data_hub/schema.py).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit import create_consumer_tables_v1, drop_consumer_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _projection_set(name: str) -> None:
    p = f"dh_{name}_"
    op.create_table(
        f"{p}customers",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("customer_version", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("kyc_verified", sa.Boolean(), nullable=False),
        sa.Column("risk_tolerance", sa.Integer(), nullable=False),
        sa.Column("risk_expire_us", sa.BigInteger(), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=False),
        sa.Column("full_name_masked", sa.String(200), nullable=False),
        sa.Column("national_id_masked", sa.String(64), nullable=False),
        sa.Column("mobile_masked", sa.String(64), nullable=False),
        sa.Column("email_masked", sa.String(200), nullable=False),
        sa.Column("create_us", sa.BigInteger(), nullable=True),
        sa.Column("last_event_us", sa.BigInteger(), nullable=False),
        sa.Column("last_txn_us", sa.BigInteger(), nullable=True),
        sa.Column("as_of_us", sa.BigInteger(), nullable=False),
        sa.Column("r", sa.Integer(), nullable=False),
        sa.Column("f", sa.Integer(), nullable=False),
        sa.Column("m", sa.Integer(), nullable=False),
        sa.Column("rfm_us", sa.BigInteger(), nullable=True),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("lifecycle_stage", sa.Integer(), nullable=False),
        sa.Column("churn_score", sa.Float(), nullable=False),
        sa.Column("doc", sa.LargeBinary(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("published_version", sa.BigInteger(), nullable=False),
        sa.Column("pending_publish", sa.Boolean(), nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.Column("update_us", sa.BigInteger(), nullable=False),
    )
    op.create_index(f"ix_{p}customers_segment", f"{p}customers", ["segment", "customer_id"])
    op.create_index(f"ix_{p}customers_stage", f"{p}customers", ["lifecycle_stage"])
    op.create_index(f"ix_{p}customers_dirty", f"{p}customers", ["dirty"])
    op.create_index(f"ix_{p}customers_pending", f"{p}customers", ["pending_publish"])
    op.create_table(
        f"{p}holdings",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("product_type", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("open_us", sa.BigInteger(), nullable=True),
        sa.Column("close_us", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.create_index(f"ix_{p}holdings_customer", f"{p}holdings", ["customer_id"])
    op.create_table(
        f"{p}transactions",
        sa.Column("transaction_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("post_us", sa.BigInteger(), nullable=False),
    )
    op.create_index(f"ix_{p}transactions_customer_time", f"{p}transactions", ["customer_id", "post_us"])
    op.create_table(
        f"{p}products",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("risk_level", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("min_age", sa.Integer(), nullable=False),
        sa.Column("max_age", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        f"{p}rfm",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("r", sa.Integer(), nullable=False),
        sa.Column("f", sa.Integer(), nullable=False),
        sa.Column("m", sa.Integer(), nullable=False),
    )


def upgrade() -> None:
    # The kit's consumer tables, created by the kit's own versioned step.
    create_consumer_tables_v1()
    state = op.create_table(
        "dh_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("active", sa.String(8), nullable=False),
        sa.Column("refresh_us", sa.BigInteger(), nullable=True),
        sa.Column("rebuild_us", sa.BigInteger(), nullable=True),
        sa.Column("rebuilds", sa.Integer(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "active": "a", "refresh_us": None, "rebuild_us": None, "rebuilds": 0}])
    for name in ("a", "b"):
        _projection_set(name)


def downgrade() -> None:
    for name in ("a", "b"):
        for table in ("rfm", "products", "transactions", "holdings", "customers"):
            op.drop_table(f"dh_{name}_{table}")
    op.drop_table("dh_state")
    drop_consumer_tables_v1()
