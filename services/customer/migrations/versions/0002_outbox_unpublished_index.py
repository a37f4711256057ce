"""Outbox: a partial index over the unpublished rows only (the relay's claim).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from services.kit import create_outbox_unpublished_index, drop_outbox_unpublished_index

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_unpublished_index()


def downgrade() -> None:
    drop_outbox_unpublished_index()
