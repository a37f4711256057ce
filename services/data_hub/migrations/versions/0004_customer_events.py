"""The customers' event feed (``dh_customer_events``, services/data_hub/event_log.py, ADR 0040).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dh_customer_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("event_us", sa.BigInteger(), nullable=False),
        sa.Column("aggregate_type", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_version", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_dh_customer_events_feed", "dh_customer_events", ["customer_id", "event_us", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_dh_customer_events_feed", table_name="dh_customer_events")
    op.drop_table("dh_customer_events")
