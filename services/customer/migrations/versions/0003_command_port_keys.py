"""Idempotency keys move to the kit's command port (``<method>:<request_id>`` → sealed first response).

The old table kept only (request_id, method, fingerprint, customer_id) and a replay re-read the
customer; the command port keeps the first response, sealed with the PII cipher
(docs/adr/0013-command-port-replays-the-first-response.md). Keys recorded before this revision
are not carried over (they hold no response to replay): a retry that crosses the upgrade meets
the state its first call left — NATIONAL_ID_EXISTS for a create, ETAG_MISMATCH or an illegal
transition for a change — never a second write.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit import create_idempotency_keys_v1

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("idempotency_keys")
    create_idempotency_keys_v1()


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.create_table(
        "idempotency_keys",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
