"""The customer event feed keeps one index: its key is (customer_id, event_us, event_id).

Before, a feed row had a primary key on its event id and a second index on (customer_id,
event_us, event_id) for the newest-first pages; every insert updated both. The pages' index is
now the key (ADR 0068: a bulk ingest's feed rows by COPY, ~12 → ~9.5 µs of PostgreSQL CPU per
posting's two rows in a throw-away measurement). A re-sent event carries the same customer, time
and id, so the insert-if-absent still lists it once.

On PostgreSQL the key is built anew: on a large feed this takes a while and locks the table
(the hub's writes wait), so run it when the hub may pause.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "dh_customer_events"
INDEX = "ix_dh_customer_events_feed"
ORDER = ["customer_id", "event_us", "event_id"]


def _rekey(key: list[str], index: list[str] | None) -> None:
    if op.get_bind().dialect.name == "postgresql":
        if index is None:
            op.drop_index(INDEX, table_name=TABLE)
        op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey")  # (PostgreSQL's own name for it)
        op.create_primary_key(f"{TABLE}_pkey", TABLE, key)
        if index is not None:
            op.create_index(INDEX, TABLE, index)
        return
    # SQLite: the table is copied into its new shape (given whole: no reflected key to replace).
    with op.batch_alter_table(TABLE, recreate="always", copy_from=_shape(key, index)):
        pass


def _shape(key: list[str], index: list[str] | None) -> sa.Table:
    shape = sa.Table(
        TABLE,
        sa.MetaData(),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("event_us", sa.BigInteger(), nullable=False),
        sa.Column("aggregate_type", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_version", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )
    if index is not None:
        sa.Index(INDEX, *(shape.c[c] for c in index))
    return shape


def upgrade() -> None:
    _rekey(ORDER, None)


def downgrade() -> None:
    _rekey(["event_id"], ORDER)
