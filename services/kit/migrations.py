"""Alembic, the only way a schema changes: each service keeps a ``migrations/`` folder.

A service's ``migrations/env.py`` is two lines::

    from services.kit.migrations import run_env
    run_env(target_metadata)

and :func:`upgrade` runs its migrations to head on an async engine (used at start-up, by the
``zhongtai migrate`` command and by the tests).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it runs: a process whose database is already at head (every restart)
# does not load it (~10 % of a service's start-up CPU, ADR 0035).


def alembic_config(script_location: Path, url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, script_location: Path, revision: str = "head") -> None:
    """Migrate the engine's database to ``revision`` (to head: nothing to do, and Alembic not even
    loaded, when the database's ``alembic_version`` already names the head revisions)."""
    if revision == "head" and await _at_head(engine, script_location):
        return
    from alembic import command

    cfg = alembic_config(script_location)

    def _run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


def head_revisions(script_location: Path) -> set[str] | None:
    """The head revisions of a migrations folder, read from its version files (module-level
    ``revision`` / ``down_revision`` literals); None when a file says anything else (branch labels,
    dependencies, computed values): then only Alembic can tell."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((script_location / "versions").glob("*.py")):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        try:
                            values[target.id] = ast.literal_eval(node.value)
                        except ValueError:
                            values[target.id] = ...
        if values.get("branch_labels") or values.get("depends_on"):
            return None
        revision, down = values.get("revision"), values.get("down_revision")
        if not isinstance(revision, str):
            return None
        downs = (down,) if down is None or isinstance(down, str) else down
        if not isinstance(downs, tuple | list) or not all(d is None or isinstance(d, str) for d in downs):
            return None
        revisions.add(revision)
        parents.update(d for d in downs if d)
    return revisions - parents or None


async def _at_head(engine: AsyncEngine, script_location: Path) -> bool:
    heads = head_revisions(script_location)
    if heads is None:
        return False
    try:
        async with engine.connect() as conn:
            current = {row[0] for row in await conn.execute(text("SELECT version_num FROM alembic_version"))}
    except DBAPIError:  # no alembic_version table yet: a new database
        return False
    return current == heads


def _do_run(connection: Connection, target_metadata: MetaData) -> None:
    from alembic import context

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_env(target_metadata: MetaData) -> None:
    """Body of a service's ``env.py``: online migrations on a given or configured connection."""
    from alembic import context

    config = context.config
    connection: Any = config.attributes.get("connection")
    if connection is not None:
        _do_run(connection, target_metadata)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    import asyncio

    async def _online() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.begin() as conn:
            await conn.run_sync(_do_run, target_metadata)
        await engine.dispose()

    asyncio.run(_online())


# ------------------------------------------------------------------------------------------
# Schema steps of the kit's own tables, shared by every service's revisions.
# Each is versioned (``_v1``) and never changes once released: a later change to a kit table is
# a new step (like ``create_outbox_unpublished_index``) that services add as a new revision.
# ------------------------------------------------------------------------------------------


def create_outbox_v1() -> None:
    """The transactional outbox (``services.kit.outbox.OutboxRow``) and its two indexes."""
    import sqlalchemy as sa
    from alembic import op

    ts = sa.DateTime(timezone=True)
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("aggregate_type", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_version", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("traceparent", sa.String(64), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("published_at", ts, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_index("ix_outbox_pending", "outbox", ["published_at", "id"])
    op.create_index("ix_outbox_aggregate", "outbox", ["aggregate_id", "id"])


def drop_outbox_v1() -> None:
    from alembic import op

    op.drop_index("ix_outbox_aggregate", table_name="outbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.drop_table("outbox")


def create_idempotency_keys_v1() -> None:
    """The command port's first responses (``services.kit.commands.CommandRecord``)."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )


def create_consumer_tables_v1() -> None:
    """The inbox consumer's tables (``services.kit.consumer.InboxRow``, ``AggregateVersion``)."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "aggregate_versions",
        sa.Column("aggregate_type", sa.String(64), primary_key=True),
        sa.Column("aggregate_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def drop_consumer_tables_v1() -> None:
    from alembic import op

    op.drop_table("aggregate_versions")
    op.drop_table("inbox")


def create_outbox_unpublished_index() -> None:
    """Partial index over the outbox's pending rows (the relay's claim; see ``OutboxRow``).

    Through ``ix_outbox_pending`` (published_at, id) the claim also walked the index entries that
    published and purged rows leave behind until autovacuum runs: 14 ms a claim (p50) right after
    a 20,000-row burst, which set the relay's commit → ack latency (bench/outbox_relay.py). The
    partial index holds pending rows only: 1.5 ms. ``ix_outbox_pending`` stays for the purge.
    """
    from alembic import op
    from sqlalchemy import text

    unpublished = text("published_at IS NULL")
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=unpublished, sqlite_where=unpublished)


def drop_outbox_unpublished_index() -> None:
    from alembic import op

    op.drop_index("ix_outbox_unpublished", table_name="outbox")


def create_audit_chain_v1(name: str) -> None:
    """A hash-chained audit log ``name`` and its head row (``services.kit.audit``), append-only:
    triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL)."""
    from alembic import op
    from sqlalchemy import MetaData

    from services.kit.audit import GENESIS, audit_tables

    bind = op.get_bind()
    tables = audit_tables(MetaData(), name)
    tables.log.create(bind)
    tables.head.create(bind)
    op.bulk_insert(tables.head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    refusal = f"{name} is append-only"
    if bind.dialect.name == "postgresql":
        op.execute(f"CREATE FUNCTION {name}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN RAISE EXCEPTION '{refusal}'; END $$")  # fmt: skip
        op.execute(f"CREATE TRIGGER {name}_refuse_change BEFORE UPDATE OR DELETE ON {name} "
                   f"FOR EACH ROW EXECUTE FUNCTION {name}_refuse()")  # fmt: skip
        op.execute(f"CREATE TRIGGER {name}_refuse_truncate BEFORE TRUNCATE ON {name} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_refuse()")  # fmt: skip
        return
    for event in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER {name}_refuse_{event.lower()} BEFORE {event} ON {name} "
                   f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END")  # fmt: skip


def drop_audit_chain_v1(name: str) -> None:
    from alembic import op

    from services.kit.audit import head_name

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {name}_refuse_truncate ON {name}")
        op.execute(f"DROP TRIGGER IF EXISTS {name}_refuse_change ON {name}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}_refuse()")
    op.drop_table(head_name(name))
    op.drop_table(name)
