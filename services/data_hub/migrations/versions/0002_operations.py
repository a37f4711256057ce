"""Operations: the dead-letter index (dh_dead_letters) and the operations audit chain
(ops_audit_log / ops_audit_head, append-only, from the kit's step).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from services.kit import create_audit_chain_v1, drop_audit_chain_v1

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from services.data_hub.dead_letters import dead_letters

    dead_letters.create(op.get_bind())
    create_audit_chain_v1("ops_audit_log")


def downgrade() -> None:
    drop_audit_chain_v1("ops_audit_log")
    op.drop_table("dh_dead_letters")
