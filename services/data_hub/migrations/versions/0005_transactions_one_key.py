"""The facts' transactions keep one index: the key is (customer_id, post_us, transaction_id).

Before, a transaction row had a primary key on its random id and a second index on
(customer_id, post_us) for the activity windows; every insert updated both. The windows' index
now is the key, with the id as its last column (a bulk ingest's transaction insert: ~24 → ~20 µs of
PostgreSQL CPU per row, ADR 0049). A redelivered TransactionPosted carries the same customer, post
time and id, so the insert-if-absent still skips it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SETS = ("a", "b")
KEY = ["customer_id", "post_us", "transaction_id"]


def _rekey(name: str, *, key: list[str], index: list[str] | None) -> None:
    table = f"dh_{name}_transactions"
    if op.get_bind().dialect.name == "postgresql":
        if index is None:
            op.drop_index(f"ix_{table}_customer_time", table_name=table)
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")  # (PostgreSQL's own name for it)
        op.create_primary_key(f"{table}_pkey", table, key)
        if index is not None:
            op.create_index(f"ix_{table}_customer_time", table, index)
        return
    # SQLite: the table is copied into its new shape (given whole: no reflected key to replace).
    with op.batch_alter_table(table, recreate="always", copy_from=_shape(table, key, index)):
        pass


def _shape(table: str, key: list[str], index: list[str] | None) -> sa.Table:
    shape = sa.Table(
        table,
        sa.MetaData(),
        sa.Column("transaction_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("post_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )
    if index is not None:
        sa.Index(f"ix_{table}_customer_time", *(shape.c[c] for c in index))
    return shape


def upgrade() -> None:
    for name in SETS:
        _rekey(name, key=KEY, index=None)


def downgrade() -> None:
    for name in SETS:
        _rekey(name, key=["transaction_id"], index=["customer_id", "post_us"])
