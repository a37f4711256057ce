"""Monthly point-in-time feature snapshots (``dh_feature_snapshots``), for the trained scores.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dh_feature_snapshots",
        sa.Column("as_of_us", sa.BigInteger(), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("feature_version", sa.Integer(), nullable=False),
        sa.Column("features", sa.String(), nullable=False),
        sa.Column("rules_churn", sa.Float(), nullable=False),
        sa.Column("held", sa.String(), nullable=False),
        sa.Column("eligible", sa.String(), nullable=False),
        sa.Column("rules_offers", sa.String(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dh_feature_snapshots")
