"""The fold's adapter: loads the stored rows a batch's patches touch, writes the fold's changes.

:func:`apply_patches` is the whole write of a batch into a table set, in the caller's
transaction: :func:`load_current` (the rows of the patches' keys, locked on PostgreSQL),
:func:`services.data_hub.fold.changes` (pure), :func:`write_changes` (a few bulk statements).
The live consumer (services/data_hub/projector.py) and the rebuild (services/data_hub/rebuild.py)
both write through it. Every change is commutative (max version wins, inserts are keyed), so any
arrival order converges.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.data_hub import fold
from services.data_hub.fold import CUSTOMER_SNAPSHOT_COLUMNS, CUSTOMER_TIME_COLUMNS, HOLDING_COLUMNS, Row
from services.data_hub.schema import TRANSACTION_KEY, Tables, built
from services.kit import bulk_insert, bulk_update, dialect_of, fetch, in_list


async def apply_patches(session: AsyncSession, t: Tables, patches: fold.Patches) -> bool:
    """Write a batch's patches into table set ``t`` (idempotent); True if the catalogue changed."""
    current = await load_current(session, t, patches)
    changes = fold.changes(patches, current)
    await write_changes(session, t, changes)
    return changes.catalogue_changed


def _lockable(dialect: str, stmt: Any) -> Any:
    # Several hub replicas may touch one customer (its topics' partitions can go to different
    # members): lock the rows read for the merge. SQLite has one writer anyway.
    return stmt.with_for_update() if dialect == "postgresql" else stmt


@built
def _merge_query(t: Tables, dialect: str, what: str) -> Any:
    """The rows a batch merges into, by key (``ids``), locked; the key first, then the fold's
    row fields in order."""
    if what == "customers":
        c = t.customers
        cols = [c.c.customer_id, *(c.c[k] for k in fold.CustomerRow._fields)]
        stmt = select(*cols).where(in_list(dialect, c.c.customer_id, "ids")).order_by(c.c.customer_id)
    elif what == "holdings":
        h = t.holdings
        cols = [h.c.subscription_id, *(h.c[k] for k in fold.HoldingRow._fields)]
        stmt = select(*cols).where(in_list(dialect, h.c.subscription_id, "ids")).order_by(h.c.subscription_id)
    else:
        p = t.products
        stmt = select(p.c.product_id, p.c.version).where(in_list(dialect, p.c.product_id, "ids"))
    return _lockable(dialect, stmt)


async def load_current(session: AsyncSession, t: Tables, patches: fold.Patches) -> fold.Current:
    """The stored rows of the patches' keys, locked (PostgreSQL) in the order the writes take
    them: products, customers, holdings."""
    dialect = dialect_of(session)

    async def rows(what: str, keys: dict[str, Any]) -> Any:
        if not keys:
            return ()
        return await fetch(session, _merge_query(t, dialect, what), {"ids": sorted(keys)})

    products = {r["product_id"]: r["version"] for r in await rows("products", patches.products)}
    customers = {
        r["customer_id"]: fold.CustomerRow._make(r[k] for k in fold.CustomerRow._fields)
        for r in await rows("customers", patches.customers)
    }
    holdings = {
        r["subscription_id"]: fold.HoldingRow._make(r[k] for k in fold.HoldingRow._fields)
        for r in await rows("holdings", patches.holdings)
    }
    return fold.Current(customers, holdings, products)


def _bound(rows: list[Row]) -> list[Row]:
    """Rows as bound parameters (``b_<column>``: SQLAlchemy reserves the column names)."""
    return [{f"b_{k}": v for k, v in row.items()} for row in rows]


def _types(table: Table, columns: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {f"b_{k}": table.c[k].type for k in columns}


def _fill_defaults(table: Table, rows: list[Row]) -> list[Row]:
    """Bulk inserts need the same keys in every row: fill the columns' Python defaults."""
    defaults: dict[str, Any] = {}
    for col in table.columns:
        arg = getattr(col.default, "arg", None)
        if arg is not None and not callable(arg):
            defaults[col.name] = arg
    keys = set().union(*rows)
    return [{**defaults, **{k: None for k in keys if k not in defaults}, **row} for row in rows]


async def write_changes(session: AsyncSession, t: Tables, changes: fold.Changes) -> None:
    """Write the fold's changes into table set ``t`` with a few bulk statements."""
    await _write_products(session, t, changes)
    await _write_customers(session, t, changes)
    await _write_holdings(session, t, changes)
    await bulk_insert(
        session, t.transactions, changes.transaction_inserts, skip_conflicts_on=TRANSACTION_KEY, driver=True
    )
    if changes.catalogue_changed:
        # Offers depend on the catalogue: every view must be re-rendered.
        await session.execute(update(t.customers).values(dirty=True, change_seq=t.customers.c.change_seq + 1))


async def _write_products(session: AsyncSession, t: Tables, changes: fold.Changes) -> None:
    p = t.products
    if changes.product_inserts:
        await session.execute(insert(p), changes.product_inserts)
    if changes.product_updates:
        cols = [k for k in changes.product_updates[0] if k != "product_id"]
        await session.execute(
            update(p)
            .where(p.c.product_id == bindparam("b_product_id"))
            .values(**{k: bindparam(f"b_{k}") for k in cols}),
            _bound(changes.product_updates),
        )


async def _write_customers(session: AsyncSession, t: Tables, changes: fold.Changes) -> None:
    c = t.customers
    if changes.customer_inserts:
        await bulk_insert(session, c, _fill_defaults(c, changes.customer_inserts), driver=True)
    times_types = _types(c, ("customer_id", *CUSTOMER_TIME_COLUMNS))

    def time_values(src: Any) -> dict[str, Any]:
        return {
            **{k: getattr(src.c, f"b_{k}") for k in CUSTOMER_TIME_COLUMNS},
            "dirty": True,
            "change_seq": c.c.change_seq + 1,
        }

    def by_id(src: Any) -> list[Any]:
        return [c.c.customer_id == src.c.b_customer_id]

    await bulk_update(
        session, c, _bound(changes.customer_time_updates), times_types, where=by_id, values=time_values, driver=True
    )
    await bulk_update(
        session,
        c,
        _bound(changes.customer_snapshot_updates),
        {**times_types, **_types(c, CUSTOMER_SNAPSHOT_COLUMNS)},
        where=by_id,
        values=lambda src: {**time_values(src), **{k: getattr(src.c, f"b_{k}") for k in CUSTOMER_SNAPSHOT_COLUMNS}},
        driver=True,
    )


async def _write_holdings(session: AsyncSession, t: Tables, changes: fold.Changes) -> None:
    h = t.holdings
    if changes.holding_inserts:
        await bulk_insert(session, h, _fill_defaults(h, changes.holding_inserts), driver=True)

    def by_id(src: Any) -> list[Any]:
        return [h.c.subscription_id == src.c.b_subscription_id]

    await bulk_update(
        session,
        h,
        _bound(changes.holding_open_updates),
        _types(h, ("subscription_id", "open_us")),
        where=by_id,
        values=lambda src: {"open_us": src.c.b_open_us},
        driver=True,
    )
    await bulk_update(
        session,
        h,
        _bound(changes.holding_updates),
        _types(h, ("subscription_id", "open_us", "version", *HOLDING_COLUMNS)),
        where=by_id,
        values=lambda src: {
            "open_us": src.c.b_open_us,
            "version": src.c.b_version,
            **{k: getattr(src.c, f"b_{k}") for k in HOLDING_COLUMNS},
        },
        driver=True,
    )
