"""The replica of the customers' eligibility facts (ADR 0054) and the kit's inbox tables its
consumer needs (``inbox``, ``aggregate_versions``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit import create_consumer_tables_v1, drop_consumer_tables_v1

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_consumer_tables_v1()
    op.create_table(
        "customer_eligibility",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("kyc_verified", sa.Boolean(), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=False),
        sa.Column("risk_tolerance", sa.Integer(), nullable=False),
        sa.Column("risk_expire_us", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("customer_eligibility")
    drop_consumer_tables_v1()
