"""Initial schema: customers (PII encrypted + blind index), idempotency keys, the hash-chained
PII audit log (append-only, enforced by triggers) and the kit's outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.kit import create_outbox_v1, drop_outbox_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 64-bit auto-increment key that SQLite also auto-increments (see services.kit.db.BigIntPK).
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
GENESIS = "0" * 64

PG_APPEND_ONLY = [
    """
    CREATE FUNCTION pii_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'pii_audit_log is append-only';
    END
    $$
    """,
    """
    CREATE TRIGGER pii_audit_log_append_only BEFORE UPDATE OR DELETE ON pii_audit_log
    FOR EACH ROW EXECUTE FUNCTION pii_audit_log_append_only()
    """,
    """
    CREATE TRIGGER pii_audit_log_no_truncate BEFORE TRUNCATE ON pii_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION pii_audit_log_append_only()
    """,
]
SQLITE_APPEND_ONLY = [
    """
    CREATE TRIGGER pii_audit_log_no_update BEFORE UPDATE ON pii_audit_log
    BEGIN SELECT RAISE(ABORT, 'pii_audit_log is append-only'); END
    """,
    """
    CREATE TRIGGER pii_audit_log_no_delete BEFORE DELETE ON pii_audit_log
    BEGIN SELECT RAISE(ABORT, 'pii_audit_log is append-only'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("full_name_enc", sa.Text(), nullable=False),
        sa.Column("birth_date_enc", sa.Text(), nullable=False),
        sa.Column("national_id_enc", sa.Text(), nullable=False),
        sa.Column("national_id_bidx", sa.String(64), nullable=False),
        sa.Column("mobile_enc", sa.Text(), nullable=False),
        sa.Column("email_enc", sa.Text(), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("kyc_verified", sa.Boolean(), nullable=False),
        sa.Column("risk_tolerance", sa.SmallInteger(), nullable=True),
        sa.Column("risk_tolerance_expire_time", TS, nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("create_time", TS, nullable=False),
        sa.Column("update_time", TS, nullable=False),
        sa.UniqueConstraint("national_id_bidx", name="uq_customers_national_id_bidx"),
    )
    op.create_index("ix_customers_page", "customers", ["create_time", "customer_id"])
    op.create_index("ix_customers_status_page", "customers", ["status", "kyc_verified", "create_time", "customer_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )

    op.create_table(
        "pii_audit_log",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_pii_audit_log_customer_id", "pii_audit_log", ["customer_id"])
    head = op.create_table(
        "pii_audit_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    dialect = op.get_bind().dialect.name
    for statement in PG_APPEND_ONLY if dialect == "postgresql" else SQLITE_APPEND_ONLY:
        op.execute(statement)

    # The kit's transactional outbox, created by the kit's own versioned step.
    create_outbox_v1()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS pii_audit_log_no_truncate ON pii_audit_log")
        op.execute("DROP TRIGGER IF EXISTS pii_audit_log_append_only ON pii_audit_log")
        op.execute("DROP FUNCTION IF EXISTS pii_audit_log_append_only()")
    drop_outbox_v1()
    for table in ("pii_audit_head", "pii_audit_log", "idempotency_keys", "customers"):
        op.drop_table(table)
