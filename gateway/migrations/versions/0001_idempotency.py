"""The gateway's shared Idempotency-Key table (ADR 0022).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_idempotency",
        sa.Column("client_id", sa.String(200), primary_key=True),
        sa.Column("idempotency_key", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=True),
        sa.Column("headers", sa.Text, nullable=True),
        sa.Column("lease_until", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_gateway_idempotency_expires_at", "gateway_idempotency", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_idempotency_expires_at", table_name="gateway_idempotency")
    op.drop_table("gateway_idempotency")
