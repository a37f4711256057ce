"""The views as served: the API's read of the active set's document and the publisher's queue
(the views :func:`services.data_hub.views.materialize` rendered and flagged ``pending_publish``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Integer, bindparam, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub.codecs import set_ts, us_ts
from services.data_hub.schema import SETS, Tables, built, state
from services.data_hub.views import View
from services.kit import Reader, bulk_update, bulk_update_statement, in_list, is_postgres


def served(doc: bytes, version: int, update_us: int) -> datahub_pb2.CustomerView:
    view = datahub_pb2.CustomerView.FromString(doc)
    view.version = version
    if (ts := us_ts(update_us or None)) is not None:
        view.update_time.CopyFrom(ts)
    return view


def served_encoding(doc: bytes, version: int, update_us: int) -> bytes:
    """:func:`served`'s view, encoded, without parsing the document: its ``version`` and
    ``update_time`` (which a stored document never carries) encoded on their own and appended —
    protobuf parses concatenated encodings as one message, so the bytes parse to exactly
    :func:`served`'s view (its fields in another order than ``SerializeToString`` writes them).
    The view worker publishes these: ~25 µs a view less than parsing and serializing a document
    with dozens of holdings."""
    tail = datahub_pb2.CustomerView(version=version)
    if update_us:
        set_ts(tail.update_time, update_us)
    return doc + tail.SerializeToString()


@functools.cache
def _view_query() -> Any:
    """The view of ``:customer_id`` in the set ``dh_state.active`` names, in ONE statement: each
    set's branch runs only if it is the active one (PostgreSQL: a one-time filter on the state's
    init plan), so the read is one round trip and one snapshot, never a view of the idle set."""
    active = select(state.c.active).where(state.c.id == 1).scalar_subquery()
    return union_all(
        *(
            select(t.customers.c.doc, t.customers.c.version, t.customers.c.update_us).where(
                t.customers.c.customer_id == bindparam("customer_id"), active == name
            )
            for name, t in SETS.items()
        )
    )


async def get_view(reader: Reader, customer_id: str) -> datahub_pb2.CustomerView | None:
    """The served view of a customer, or None (no view yet, or no such customer)."""
    row = await reader.first(_view_query(), {"customer_id": customer_id})
    if row is None or row[0] is None:
        return None
    return served(row[0], row[1], row[2])


@built
def _pending_query(t: Tables) -> Any:
    c = t.customers
    return (
        select(c.c.customer_id, c.c.doc, c.c.version, c.c.update_us)
        .where(c.c.pending_publish.is_(True), c.c.doc.is_not(None))
        .order_by(c.c.customer_id)
        .limit(bindparam("limit", type_=Integer))
    )


async def pending_views(session: AsyncSession, t: Tables, limit: int) -> list[View]:
    rows = (await session.execute(_pending_query(t), {"limit": limit})).all()
    return [(r.customer_id, r.doc, r.version, r.update_us) for r in rows]


def _published(t: Tables, published: Iterable[tuple[str, int]], pg: bool) -> dict[str, Any] | None:
    """:func:`bulk_update`'s arguments for clearing ``pending_publish`` (see :func:`mark_published`)."""
    c = t.customers
    rows = [{"b_id": cid, "b_version": v} for cid, v in published]
    if not rows:
        return None

    def where(src: Any) -> list[Any]:
        matched = [c.c.customer_id == src.c.b_id, c.c.version == src.c.b_version]
        if pg:
            free = c.alias("free")
            held_elsewhere_skipped = (
                select(free.c.customer_id)
                .where(in_list("postgresql", free.c.customer_id, "guard_ids"))
                .with_for_update(skip_locked=True)
            )
            matched.append(c.c.customer_id.in_(held_elsewhere_skipped))
        return matched

    return {
        "table": c,
        "rows": rows,
        "types": {"b_id": c.c.customer_id.type, "b_version": c.c.version.type},
        "where": where,
        "values": lambda src: {"pending_publish": False, "published_version": src.c.b_version},
        "params": {"guard_ids": [r["b_id"] for r in rows]} if pg else None,
    }


async def mark_published(session: AsyncSession, t: Tables, published: Iterable[tuple[str, int]]) -> None:
    """Clear ``pending_publish`` of the views published at these versions.

    On PostgreSQL rows that a consumer batch holds right now are skipped instead of waited for
    (``FOR UPDATE SKIP LOCKED`` in the same statement; they keep the flag and are published
    again: at-least-once, consumers keep the highest version) — waiting here made the view
    worker and the consumer queue behind each other.
    """
    args = _published(t, published, is_postgres(session))
    if args is not None:
        await bulk_update(session, **args)


def mark_published_statement(t: Tables, published: Iterable[tuple[str, int]]) -> tuple[Any, dict[str, Any]] | None:
    """PostgreSQL: :func:`mark_published`'s one UPDATE and its parameters, to run on its own
    (autocommit: one statement is atomic by itself); None when there is nothing to clear."""
    args = _published(t, published, True)
    return None if args is None else bulk_update_statement(**args, key=("hub-published",))


async def all_docs(session: AsyncSession, t: Tables) -> dict[str, bytes]:
    """customer_id -> view document (tests and the rebuild's comparison)."""
    c = t.customers
    rows = (await session.execute(select(c.c.customer_id, c.c.doc).order_by(c.c.customer_id))).all()
    return {r.customer_id: r.doc for r in rows}
