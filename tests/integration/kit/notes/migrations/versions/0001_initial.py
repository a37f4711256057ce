"""The notes capability: its tables, and the kit's through the kit's own steps.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit import create_consumer_tables_v1, create_idempotency_keys_v1, create_outbox_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("boards", sa.Column("board_id", sa.String(64), primary_key=True),
                    sa.Column("version", sa.Integer(), nullable=False))  # fmt: skip
    op.create_table("board_counts", sa.Column("board_id", sa.String(64), primary_key=True),
                    sa.Column("notes", sa.Integer(), nullable=False))  # fmt: skip
    create_outbox_v1()
    create_idempotency_keys_v1()
    create_consumer_tables_v1()
