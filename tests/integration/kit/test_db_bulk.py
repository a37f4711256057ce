"""The kit's bulk statements give the same rows on PostgreSQL (one JSON-recordset statement)
and SQLite (executemany): every column type the projections use, NULLs, awkward strings,
bytes, conflicts skipped, updates keyed and guarded; ``in_list`` matches like IN on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    case,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.bulk import (
    COPY_MIN_ROWS,
    as_dicts,
    bulk_insert,
    bulk_insert_statement,
    bulk_update,
    bulk_update_statement,
    bulk_upsert,
    bulk_writes,
    copy_insert,
    defer_write,
)
from services.kit.db import (
    UnitOfWork,
    create_engine,
    in_list,
)
from services.kit.faults import is_infrastructure_error
from services.kit.fetch import copy_rows

metadata = MetaData()
things = Table(
    "bulk_things",
    metadata,
    Column("thing_id", String(64), primary_key=True),
    Column("offset", BigInteger, nullable=False),  # a reserved word as a column name
    Column("n", Integer, nullable=True),
    Column("score", Float, nullable=False),
    Column("flag", Boolean, nullable=False),
    Column("doc", LargeBinary, nullable=True),
    Column("note", String(200), nullable=True),
    Column("at", DateTime(timezone=True), nullable=True),
    Column("version", BigInteger, nullable=False),
)

#: The same shape as ``things``: reused bulk statements must not mix the two up.
twin = things.to_metadata(metadata, name="bulk_things_twin")

AT = datetime(2026, 11, 27, 12, 30, 45, 123456, tzinfo=UTC)


def _row(i: int) -> dict[str, object]:
    return {
        "thing_id": f"t-{i:04d}",
        "offset": 2**40 + i,
        "n": None if i % 3 == 0 else i,
        "score": 1 / 3 + i,
        "flag": i % 2 == 0,
        "doc": bytes([i % 256, 0, 255, 10]) if i % 4 else None,
        "note": 'it\'s "quoted", {braced}, back\\slash, 中台, \n new line' if i % 5 == 0 else None,
        "at": AT if i % 2 else None,
        "version": 1,
    }


async def _with_table(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh SQLite or PostgreSQL database holding the empty test table."""
    async for engine in _with_table(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")):
        yield engine


async def _all(engine) -> dict[str, dict[str, object]]:  # type: ignore[no-untyped-def]
    async with UnitOfWork(engine) as uow:
        rows = (await uow.session.execute(select(things).order_by(things.c.thing_id))).mappings().all()
    return {r["thing_id"]: dict(r) for r in rows}


def _normal(row: dict[str, object]) -> dict[str, object]:
    out = dict(row)
    at = out.get("at")
    if isinstance(at, datetime) and at.tzinfo is None:
        out["at"] = at.replace(tzinfo=UTC)  # SQLite keeps no zone
    return out


async def test_bulk_insert_round_trips_every_type(engine: AsyncEngine) -> None:
    rows = [_row(i) for i in range(300)]
    async with UnitOfWork(engine) as uow:
        await bulk_insert(uow.session, things, rows)
        await uow.commit()
    stored = await _all(engine)
    assert [_normal(stored[r["thing_id"]]) for r in rows] == rows  # type: ignore[index]


async def test_bulk_insert_skips_conflicts_and_bulk_update_is_keyed_and_guarded(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as uow:
        await bulk_insert(uow.session, things, [_row(i) for i in range(10)])
        await uow.commit()
    async with UnitOfWork(engine) as uow:
        clash = {**_row(3), "score": 99.0}
        await bulk_insert(uow.session, things, [clash, _row(10)], skip_conflicts_on=["thing_id"])
        await bulk_update(
            uow.session,
            things,
            [
                {"b_id": "t-0001", "b_v": 1, "b_doc": b"\x00new", "b_note": None},
                {"b_id": "t-0002", "b_v": 7, "b_doc": b"stale", "b_note": "guard says no"},  # version mismatch
                {"b_id": "t-9999", "b_v": 1, "b_doc": b"none", "b_note": "no such row"},
            ],
            {
                "b_id": things.c.thing_id.type,
                "b_v": things.c.version.type,
                "b_doc": things.c.doc.type,
                "b_note": things.c.note.type,
            },
            where=lambda src: [things.c.thing_id == src.c.b_id, things.c.version == src.c.b_v],
            values=lambda src: {"doc": src.c.b_doc, "note": src.c.b_note, "version": things.c.version + 1},
        )
        await uow.commit()
    stored = await _all(engine)
    assert sorted(stored) == [f"t-{i:04d}" for i in range(11)]
    assert stored["t-0003"]["score"] == _row(3)["score"]  # the conflicting row was skipped
    assert (stored["t-0001"]["doc"], stored["t-0001"]["note"], stored["t-0001"]["version"]) == (b"\x00new", None, 2)
    assert _normal(stored["t-0002"]) == _row(2)


async def test_copy_insert_round_trips_every_type_and_skips_conflicts_like_bulk_insert(engine: AsyncEngine) -> None:
    # (COPY on PostgreSQL from COPY_MIN_ROWS rows on; the same outcome as bulk_insert everywhere)
    first = [_row(i) for i in range(COPY_MIN_ROWS + 50)]
    async with UnitOfWork(engine) as uow:
        await copy_insert(uow.session, things, first)
        await uow.commit()
    stored = await _all(engine)
    assert [_normal(stored[r["thing_id"]]) for r in first] == first  # type: ignore[index]

    clash = {**_row(7), "score": 99.0}  # an existing key: the rows go the insert-if-absent way
    more = [clash, *(_row(i) for i in range(len(first), len(first) + COPY_MIN_ROWS))]
    async with UnitOfWork(engine) as uow:
        await copy_insert(uow.session, things, more, skip_conflicts_on=["thing_id"])
        await bulk_insert(uow.session, things, [_row(9999)])  # the transaction goes on
        await uow.commit()
    stored = await _all(engine)
    assert len(stored) == len(first) + COPY_MIN_ROWS + 1
    assert stored["t-0007"]["score"] == _row(7)["score"]  # the conflicting row was skipped
    assert all(_normal(stored[r["thing_id"]]) == r for r in more[1:])  # type: ignore[index]

    with pytest.raises(IntegrityError):  # no key to skip conflicts on: as bulk_insert
        async with UnitOfWork(engine) as uow:
            await copy_insert(uow.session, things, more)
    async with UnitOfWork(engine) as uow:  # rolled back: the copied rows go with it
        await copy_insert(uow.session, things, [_row(i) for i in range(20_000, 20_000 + COPY_MIN_ROWS)])
    assert len(await _all(engine)) == len(first) + COPY_MIN_ROWS + 1


async def test_copy_insert_of_tuples_in_named_columns_stores_what_dicts_would(engine: AsyncEngine) -> None:
    # (ADR 0071: rows built as the COPY's tuples; below COPY_MIN_ROWS, on SQLite and on a
    # conflict they go bulk_insert's way as dicts)
    columns = [c.name for c in things.columns]
    shuffled = columns[::-1]  # any order the caller names
    many = [_row(i) for i in range(COPY_MIN_ROWS + 5)]
    few = [_row(i) for i in range(500, 503)]
    clash = [{**_row(3), "score": 99.0}, *(_row(i) for i in range(600, 600 + COPY_MIN_ROWS))]
    async with UnitOfWork(engine) as uow:
        for rows in (many, few, clash):
            tuples = [tuple(r[c] for c in shuffled) for r in rows]
            await copy_insert(uow.session, things, tuples, columns=shuffled, skip_conflicts_on=["thing_id"])
        await uow.commit()
    stored = await _all(engine)
    assert len(stored) == len(many) + len(few) + len(clash) - 1
    assert stored["t-0003"]["score"] == _row(3)["score"]  # the conflicting row was skipped
    assert all(_normal(stored[r["thing_id"]]) == r for r in [*many, *few, *clash[1:]])  # type: ignore[index]


def test_as_dicts_names_each_value_and_refuses_a_short_row() -> None:
    assert as_dicts(["a", "b"], [(1, 2), (3, 4)]) == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    with pytest.raises(ValueError):
        as_dicts(["a", "b"], [(1,)])


async def test_copy_rows_copies_in_the_transaction_and_declines_a_conflict_under_its_savepoint(
    pg_engine: AsyncEngine,
) -> None:
    columns = [c.name for c in things.columns]
    records = [tuple(_row(i).values()) for i in range(3)]
    async with UnitOfWork(pg_engine) as uow:
        assert await copy_rows(uow.session, things.name, columns, records)  # the COPY way
        assert not await copy_rows(uow.session, things.name, columns, [tuple(_row(3).values()), records[0]])
        await bulk_insert(uow.session, things, [_row(4)])  # the savepoint rolled back, the transaction goes on
        await uow.commit()
    assert sorted(await _all(pg_engine)) == ["t-0000", "t-0001", "t-0002", "t-0004"]


async def test_a_copy_on_a_lost_connection_is_an_infrastructure_error_and_the_pool_goes_on(
    pg_engine: AsyncEngine,
) -> None:
    # (a consumer retries an infrastructure error; anything else could dead-letter good events)
    rows = [_row(i) for i in range(COPY_MIN_ROWS)]
    with pytest.raises(Exception) as caught:
        async with UnitOfWork(pg_engine) as uow:
            pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
            async with pg_engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await copy_insert(uow.session, things, rows, skip_conflicts_on=["thing_id"])
    assert is_infrastructure_error(caught.value), repr(caught.value)
    async with UnitOfWork(pg_engine) as uow:
        await copy_insert(uow.session, things, rows, skip_conflicts_on=["thing_id"])
        await uow.commit()
    assert len(await _all(pg_engine)) == COPY_MIN_ROWS


async def test_bulk_upsert_inserts_new_rows_and_updates_existing_ones(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as uow:
        await bulk_insert(uow.session, things, [_row(i) for i in range(3)])
        await uow.commit()
    version = things.c.version
    async with UnitOfWork(engine) as uow:
        await bulk_upsert(
            uow.session,
            things,
            [{**_row(1), "version": 5}, {**_row(2), "version": 0}, {**_row(7), "version": 3}],
            key=["thing_id"],
            update_existing=lambda new: {"version": case((new.version > version, new.version), else_=version)},
        )
        await uow.commit()
    stored = await _all(engine)
    assert {k: v["version"] for k, v in stored.items()} == {"t-0000": 1, "t-0001": 5, "t-0002": 1, "t-0007": 3}
    assert _normal(stored["t-0007"]) == {**_row(7), "version": 3}


async def test_in_list_matches_like_in_and_its_sql_does_not_depend_on_the_count(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine) as uow:
        await bulk_insert(uow.session, things, [_row(i) for i in range(20)])
        await uow.commit()
    dialect = engine.dialect.name
    by_id = select(things.c.thing_id).where(in_list(dialect, things.c.thing_id, "ids")).order_by(things.c.thing_id)
    by_n = select(things.c.n).where(in_list(dialect, things.c.n, "ns"))
    async with UnitOfWork(engine) as uow:
        session = uow.session

        async def matching(ids: list[str]) -> list[str]:
            return list((await session.execute(by_id, {"ids": ids})).scalars())

        assert await matching(["t-0003", "t-0011", "t-0404", "it's"]) == ["t-0003", "t-0011"]
        assert await matching(["t-0019"]) == ["t-0019"]
        assert await matching([]) == []
        assert sorted((await session.execute(by_n, {"ns": list(range(500))})).scalars()) == [
            i for i in range(20) if i % 3
        ]
    if dialect == "postgresql":
        # One array parameter: the same SQL whatever the number of values, prepared once.
        assert "= ANY" in str(by_id.compile(engine.sync_engine))


async def test_reused_bulk_statements_keep_tables_and_captured_values_apart(engine: AsyncEngine) -> None:
    # The same builder code over two tables, and with two captured values: each call must hit
    # its own table with its own value, however the statements are cached between calls.
    async def bump(session, table: Table, ids: list[str], by: int) -> None:  # type: ignore[no-untyped-def]
        await bulk_update(
            session,
            table,
            [{"b_id": i} for i in ids],
            {"b_id": table.c.thing_id.type},
            where=lambda src: [table.c.thing_id == src.c.b_id],
            values=lambda src: {"version": table.c.version + by},
        )

    for table in (things, twin):
        async with UnitOfWork(engine) as uow:
            await bulk_insert(uow.session, table, [_row(i) for i in range(4)], skip_conflicts_on=["thing_id"])
            await uow.commit()
    for _ in range(2):
        async with UnitOfWork(engine) as uow:
            await bump(uow.session, things, ["t-0001"], 10)
            await bump(uow.session, twin, ["t-0002"], 100)
            await bump(uow.session, twin, ["t-0003"], 1000)
            await uow.commit()
    async with UnitOfWork(engine) as uow:
        got = {
            table.name: dict((await uow.session.execute(select(table.c.thing_id, table.c.version))).tuples().all())
            for table in (things, twin)
        }
    assert got == {
        "bulk_things": {"t-0000": 1, "t-0001": 21, "t-0002": 1, "t-0003": 1},
        "bulk_things_twin": {"t-0000": 1, "t-0001": 1, "t-0002": 201, "t-0003": 2001},
    }


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """PostgreSQL only: bulk_writes and defer_write are its data-modifying CTEs."""
    async for engine in _with_table(pg_url):
        yield engine


def _bump(rows: list[dict[str, object]], param: str) -> tuple[object, dict[str, object]]:
    return bulk_update_statement(
        things,
        rows,
        {"b_id": things.c.thing_id.type, "b_note": things.c.note.type},
        where=lambda src: [things.c.thing_id == src.c.b_id],
        values=lambda src: {"note": src.c.b_note, "version": things.c.version + 1},
        param=param,
    )


async def test_bulk_writes_run_as_one_statement_and_deferred_ones_at_the_commit(pg_engine: AsyncEngine) -> None:
    async with UnitOfWork(pg_engine) as uow:
        await bulk_insert(uow.session, things, [_row(i) for i in range(4)])
        await uow.commit()
    async with UnitOfWork(pg_engine) as uow:  # an insert and an update of other rows, one statement
        insert = bulk_insert_statement(things, [_row(4), _row(0)], skip_conflicts_on=["thing_id"], param="new")
        await bulk_writes(uow.session, [insert, _bump([{"b_id": "t-0001", "b_note": "one"}], "bumped")])
        defer_write(uow.session, _bump([{"b_id": "t-0002", "b_note": "two"}], "later"))
        await uow.commit()  # runs the deferred write first
    async with UnitOfWork(pg_engine) as uow:  # rolled back: the deferred write goes with it
        defer_write(uow.session, _bump([{"b_id": "t-0003", "b_note": "never"}], "later"))
    stored = await _all(pg_engine)
    assert sorted(stored) == [f"t-{i:04d}" for i in range(5)]
    assert _normal(stored["t-0000"]) == _row(0)  # the conflicting insert skipped
    assert [(stored[k]["note"], stored[k]["version"]) for k in ("t-0001", "t-0002")] == [("one", 2), ("two", 2)]
    assert _normal(stored["t-0003"]) == _row(3)
