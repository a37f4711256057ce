"""The fold's adapter: loads the stored rows a batch's patches touch, writes the fold's changes.

:func:`apply_patches` is the whole write of a batch into a table set, in the caller's
transaction: :func:`load_current` (the rows of the patches' keys, locked on PostgreSQL),
:func:`services.data_hub.fold.changes` (pure), :func:`write_changes` (a few bulk statements).
The live consumer (services/data_hub/projector.py) and the rebuild (services/data_hub/rebuild.py)
both write through it. Every change is commutative (max version wins, inserts are keyed), so any
arrival order converges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Table, Text, bindparam, cast, func, insert, literal_column, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.data_hub import fold
from services.data_hub.event_log import FEED_COLUMNS, FEED_KEY, customer_events
from services.data_hub.fold import CUSTOMER_SNAPSHOT_COLUMNS, CUSTOMER_TIME_COLUMNS, HOLDING_COLUMNS, Row
from services.data_hub.schema import SETS, TRANSACTION_KEY, Tables, active_tables, built, state
from services.kit import (
    COPY_MIN_ROWS,
    as_dicts,
    bulk_insert,
    bulk_insert_statement,
    bulk_update,
    bulk_update_statement,
    bulk_writes,
    copy_insert,
    dialect_of,
    fetch,
    in_list,
    is_postgres,
)


async def apply_patches(
    session: AsyncSession, t: Tables, patches: fold.Patches, current: fold.Current | None = None
) -> bool:
    """Write a batch's patches into table set ``t`` (idempotent); True if the catalogue changed.
    ``current``: the stored rows of the patches' keys, locked, if the caller read them already
    (:func:`apply_live`); else they are read here (:func:`load_current`)."""
    if current is None:
        current = await load_current(session, t, patches)
    changes = fold.changes(patches, current)
    await write_changes(session, t, changes, patches.feed)
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


@built
def _live_query(t: Tables) -> Any:
    """PostgreSQL: a live batch's locks and the rows it merges into, in ONE statement (three round
    trips before): the state row share-locked (a rebuild's flip, FOR UPDATE, waits for the batch,
    and the batch for it: no batch lands in a set being retired), then the customers
    (``customer_ids``) and the holdings (``subscription_ids``) of set ``t``, locked; each locked in
    its own CTE, in that order (the order every writer takes them), each row a JSON array (the
    key, then the fold's row fields in order) tagged ``s``, ``c`` or ``h``."""

    def tagged(tag: str, locked: Any) -> Any:
        row = cast(func.json_build_array(*locked.c), Text)  # (as text: orjson decodes it, not asyncpg's json codec)
        return select(literal_column(f"'{tag}'").label("tag"), row.label("row"))

    def part(tag: str, table: Table, key: str, fields: tuple[str, ...], param: str) -> Any:
        k = table.c[key]
        rows = select(k, *(table.c[f] for f in fields)).where(in_list("postgresql", k, param)).order_by(k)
        return tagged(tag, rows.with_for_update().cte(f"merge_{tag}"))

    active = select(state.c.active).where(state.c.id == 1).with_for_update(read=True).cte("merge_s")
    return union_all(
        tagged("s", active),
        part("c", t.customers, "customer_id", fold.CustomerRow._fields, "customer_ids"),
        part("h", t.holdings, "subscription_id", fold.HoldingRow._fields, "subscription_ids"),
    )


async def apply_live(session: AsyncSession, guess: Tables, patches: fold.Patches) -> tuple[Tables, bool]:
    """The live consumer's :func:`apply_patches` into the active set, share-locked for the batch's
    transaction; returns (that set, did the catalogue change). ``guess``: the set the last batch
    wrote (PostgreSQL, a batch without products: its lock and rows come in one statement, read
    again in the other set if a rebuild has swapped them)."""
    current: fold.Current | None = None
    if is_postgres(session) and not patches.products:
        t, current = await _load_live(session, guess, patches)
    else:
        t = await active_tables(session, lock="share")
    return t, await apply_patches(session, t, patches, current)


async def _load_live(session: AsyncSession, t: Tables, patches: fold.Patches) -> tuple[Tables, fold.Current]:
    keys = {"customer_ids": sorted(patches.customers), "subscription_ids": sorted(patches.holdings)}
    while True:
        rows = [(r["tag"], orjson.loads(r["row"])) for r in await fetch(session, _live_query(t), keys)]
        active = next((row[0] for tag, row in rows if tag == "s"), None)
        if active is None:
            raise RuntimeError("dh_state is empty: run the data hub migrations")
        if active == t.name:
            customers = {row[0]: fold.CustomerRow._make(row[1:]) for tag, row in rows if tag == "c"}
            holdings = {row[0]: fold.HoldingRow._make(row[1:]) for tag, row in rows if tag == "h"}
            return t, fold.Current(customers, holdings, {})
        t = SETS[active]  # (the state row stays locked: the set cannot change again)


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


class _Writes:
    """A batch's bulk writes: on PostgreSQL gathered into ONE statement (the kit's
    :func:`~services.kit.bulk_writes`, each write a data-modifying CTE: one round trip instead of
    one each, ~0.15–0.3 ms of the hub's CPU per round trip saved), elsewhere run one by one as
    they come. Every write of a batch touches other rows (each key is in one list of the fold's
    :class:`~services.data_hub.fold.Changes`), so none needs to see another's."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._parts: list[tuple[Any, dict[str, Any]]] | None = [] if is_postgres(session) else None

    async def insert(
        self,
        name: str,
        table: Table,
        rows: list[Row] | list[fold.Record],
        skip_conflicts_on: tuple[str, ...] = (),
        columns: tuple[str, ...] | None = None,
    ) -> None:
        """Insert ``rows`` (``skip_conflicts_on``: if absent): dicts, or with ``columns`` tuples in
        their order (the catch-up's transactions and feed: a COPY's own records, ADR 0071)."""
        if not rows:
            return
        if self._parts is not None and len(rows) >= COPY_MIN_ROWS:
            # A catch-up batch's transactions and feed rows: a COPY costs PostgreSQL about half
            # (ADR 0068); its three round trips cost less than the rows' CTE from ~100 rows on.
            await copy_insert(self._session, table, rows, columns=columns, skip_conflicts_on=skip_conflicts_on)
            return
        dicts: list[Row] = rows if columns is None else as_dicts(columns, rows)  # type: ignore[assignment,arg-type]
        if self._parts is None:
            await bulk_insert(self._session, table, dicts, skip_conflicts_on=skip_conflicts_on)
        else:
            self._parts.append(bulk_insert_statement(table, dicts, skip_conflicts_on=skip_conflicts_on, param=name))

    async def update(self, name: str, table: Table, rows: list[Row], types: dict[str, Any], **build: Any) -> None:
        if not rows:
            return
        if self._parts is None:
            await bulk_update(self._session, table, rows, types, **build)
        else:
            # (the statement is found by its call site's name: types, where and values follow from it)
            self._parts.append(bulk_update_statement(table, rows, types, param=name, key=("hub-facts",), **build))

    async def run(self) -> None:
        if self._parts:
            await bulk_writes(self._session, self._parts)


async def write_changes(
    session: AsyncSession, t: Tables, changes: fold.Changes, feed: Sequence[fold.Record] = ()
) -> None:
    """Write the fold's changes into table set ``t`` with a few bulk statements (one on PostgreSQL
    but for the rare products); ``feed``: the batch's customer event feed rows, insert-if-absent
    in the same statement (the feed is one table, outside the blue/green sets: ADR 0062)."""
    await _write_products(session, t, changes)
    writes = _Writes(session)
    await _write_customers(writes, t, changes)
    await _write_holdings(writes, t, changes)
    await writes.insert(
        "transactions", t.transactions, changes.transaction_inserts, TRANSACTION_KEY, fold.TRANSACTION_COLUMNS
    )
    await writes.insert("feed", customer_events, list(feed), FEED_KEY, FEED_COLUMNS)
    await writes.run()
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


async def _write_customers(writes: _Writes, t: Tables, changes: fold.Changes) -> None:
    c = t.customers
    if changes.customer_inserts:
        await writes.insert("customer_inserts", c, _fill_defaults(c, changes.customer_inserts))
    times_types = _types(c, ("customer_id", *CUSTOMER_TIME_COLUMNS))

    def time_values(src: Any) -> dict[str, Any]:
        return {
            **{k: getattr(src.c, f"b_{k}") for k in CUSTOMER_TIME_COLUMNS},
            "dirty": True,
            "change_seq": c.c.change_seq + 1,
        }

    def by_id(src: Any) -> list[Any]:
        return [c.c.customer_id == src.c.b_customer_id]

    await writes.update(
        "customer_times", c, _bound(changes.customer_time_updates), times_types, where=by_id, values=time_values
    )
    await writes.update(
        "customer_snapshots",
        c,
        _bound(changes.customer_snapshot_updates),
        {**times_types, **_types(c, CUSTOMER_SNAPSHOT_COLUMNS)},
        where=by_id,
        values=lambda src: {**time_values(src), **{k: getattr(src.c, f"b_{k}") for k in CUSTOMER_SNAPSHOT_COLUMNS}},
    )


async def _write_holdings(writes: _Writes, t: Tables, changes: fold.Changes) -> None:
    h = t.holdings
    if changes.holding_inserts:
        await writes.insert("holding_inserts", h, _fill_defaults(h, changes.holding_inserts))

    def by_id(src: Any) -> list[Any]:
        return [h.c.subscription_id == src.c.b_subscription_id]

    await writes.update(
        "holding_opens",
        h,
        _bound(changes.holding_open_updates),
        _types(h, ("subscription_id", "open_us")),
        where=by_id,
        values=lambda src: {"open_us": src.c.b_open_us},
    )
    await writes.update(
        "holding_updates",
        h,
        _bound(changes.holding_updates),
        _types(h, ("subscription_id", "open_us", "version", *HOLDING_COLUMNS)),
        where=by_id,
        values=lambda src: {
            "open_us": src.c.b_open_us,
            "version": src.c.b_version,
            **{k: getattr(src.c, f"b_{k}") for k in HOLDING_COLUMNS},
        },
    )
