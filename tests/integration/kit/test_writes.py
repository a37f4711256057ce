"""The command port's Core write transactions (``Commands.run_core``, ``services.kit.writes``) on
real PostgreSQL (the pooled asyncpg connection) and SQLite (a unit of work's session)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import bindparam, exists, func, select, update

from bank.product.v1 import events_pb2, product_pb2
from services.kit import Tx, add_event, first_or_replay, guard_staged, stage_insert
from services.kit.commands import CommandRecord, Commands
from services.kit.errors import AlreadyExists, NotFound
from services.kit.outbox import OutboxRow
from services.kit.writes import driver_writes

from .conftest import Effect

EFFECTS = Effect.__table__
_VERSION = select(EFFECTS.c.version).where(EFFECTS.c.aggregate_id == bindparam("a")).with_for_update()
_BUMP = update(EFFECTS).where(EFFECTS.c.aggregate_id == bindparam("a")).values(version=EFFECTS.c.version + 1)


async def _schema(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.run_sync(CommandRecord.metadata.create_all)


async def _count(engine, table, aggregate: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        query = select(func.count()).select_from(table).where(table.c.aggregate_id == aggregate)
        return int(await conn.scalar(query))


def _request(request_id: str, aggregate: str) -> product_pb2.PublishProductRequest:
    return product_pb2.PublishProductRequest(product_id=aggregate, request_id=request_id)


def _decider(aggregate: str, calls: list[int], *, fail: bool = False, pause: float = 0.0):  # type: ignore[no-untyped-def]
    async def decide(tx: Tx) -> product_pb2.Product:
        calls.append(1)
        stage_insert(tx, EFFECTS, {"event_id": uuid.uuid4().hex, "aggregate_id": aggregate, "version": len(calls)})
        add_event(
            tx,
            events_pb2.ProductPublished(product_id=aggregate, version=len(calls)),
            source="test",
            aggregate_type="product",
            aggregate_id=aggregate,
            version=len(calls),
        )
        if pause:
            await asyncio.sleep(pause)  # (concurrent callers are all in their transactions)
        if fail:
            raise NotFound("refused after staging", reason="TEST")
        return product_pb2.Product(product_id=aggregate, version=len(calls))

    return decide


async def _seeded(engine, prefix: str) -> tuple[Commands, str]:  # type: ignore[no-untyped-def]
    """A command port and an aggregate with one effect row (version 1)."""
    await _schema(engine)
    commands = Commands(engine)
    aggregate = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await commands.run_core("PublishProduct", _request("", aggregate), product_pb2.Product, _decider(aggregate, []))
    return commands, aggregate


async def test_postgres_runs_on_the_driver_connection_and_sqlite_in_a_session(kit_db) -> None:  # type: ignore[no-untyped-def]
    url, engine = kit_db
    assert driver_writes(engine) is url.startswith("postgresql")


async def test_a_core_write_commits_its_staged_rows_and_replays_its_first_response(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    await _schema(engine)
    woken: list[int] = []
    commands = Commands(engine, after_commit=[lambda: woken.append(1)])
    aggregate, calls = f"w-{uuid.uuid4().hex[:8]}", []
    request = _request(uuid.uuid4().hex, aggregate)

    first = await commands.run_core("PublishProduct", request, product_pb2.Product, _decider(aggregate, calls))
    again = await commands.run_core("PublishProduct", request, product_pb2.Product, _decider(aggregate, calls))
    ahead = await commands.replayed("PublishProduct", request, product_pb2.Product)

    assert first == again == ahead and first.version == 1 and len(calls) == 1
    assert await _count(engine, EFFECTS, aggregate) == 1
    assert await _count(engine, OutboxRow.__table__, aggregate) == 1
    assert woken == [1]  # woken after the one commit, not for the replay
    with pytest.raises(AlreadyExists) as refused:
        other = _request(request.request_id, "someone-else")
        await commands.run_core("PublishProduct", other, product_pb2.Product, _decider("x", calls))
    assert refused.value.reason == "REQUEST_ID_REUSED" and len(calls) == 1


async def test_a_refusal_rolls_back_everything_and_the_connection_stays_usable(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    await _schema(engine)
    woken: list[int] = []
    commands = Commands(engine, after_commit=[lambda: woken.append(1)])
    aggregate, calls = f"r-{uuid.uuid4().hex[:8]}", []
    refused = [_request(uuid.uuid4().hex, aggregate) for _ in range(3)]
    for request in refused:  # (more than once: a connection handed back mid-transaction would show)
        with pytest.raises(NotFound):
            await commands.run_core(
                "PublishProduct", request, product_pb2.Product, _decider(aggregate, calls, fail=True)
            )
    assert await _count(engine, EFFECTS, aggregate) == 0
    assert await _count(engine, OutboxRow.__table__, aggregate) == 0
    assert woken == []
    for request in refused:  # no idempotency record either: a retry decides again
        assert await commands.replayed("PublishProduct", request, product_pb2.Product) is None
    done = await commands.run_core(
        "PublishProduct", _request(uuid.uuid4().hex, aggregate), product_pb2.Product, _decider(aggregate, calls)
    )
    assert done.version == 4 and await _count(engine, EFFECTS, aggregate) == 1 and woken == [1]


async def test_reads_for_update_and_row_counts(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    commands, aggregate = await _seeded(engine, "u")

    async def bump(tx: Tx) -> product_pb2.Product:
        (version,) = await tx.first(_VERSION, {"a": aggregate})
        changed = await tx.execute(_BUMP, {"a": aggregate})
        missing = await tx.execute(_BUMP, {"a": "no-such-aggregate"})
        assert (changed, missing) == (1, 0)
        assert await tx.first(_VERSION, {"a": "no-such-aggregate"}) is None
        return product_pb2.Product(product_id=aggregate, version=version + 1)

    results = await asyncio.gather(
        *(commands.run_core("PublishProduct", _request("", aggregate), product_pb2.Product, bump) for _ in range(3))
    )
    assert sorted(r.version for r in results) == [2, 3, 4]  # FOR UPDATE: each saw the one before


async def test_concurrent_duplicates_commit_once_on_the_driver_path(pg_kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = pg_kit_db
    await _schema(engine)
    commands = Commands(engine)
    aggregate, calls = f"race-{uuid.uuid4().hex[:8]}", []
    request = _request(uuid.uuid4().hex, aggregate)
    decide = _decider(aggregate, calls, pause=0.2)

    results = await asyncio.gather(
        *(commands.run_core("PublishProduct", request, product_pb2.Product, decide) for _ in range(4))
    )
    assert len({r.SerializeToString() for r in results}) == 1
    assert await _count(engine, EFFECTS, aggregate) == 1  # the losers rolled back their effects
    assert await _count(engine, OutboxRow.__table__, aggregate) == 1


_BUMP_RETURNING = _BUMP.returning(EFFECTS.c.aggregate_id, EFFECTS.c.version)


async def test_a_replay_read_folded_into_the_update_answers_like_the_plain_one(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    commands, aggregate = await _seeded(engine, "f")
    calls: list[int] = []

    def bump(target: str):  # type: ignore[no-untyped-def]
        async def decide(tx: Tx) -> product_pb2.Product:
            calls.append(1)
            row = await first_or_replay(tx, _BUMP_RETURNING, {"a": target})
            if row is None:
                raise NotFound("nothing to bump", reason="TEST")
            return product_pb2.Product(product_id=row[0], version=row[1])

        return decide

    request = _request(uuid.uuid4().hex, aggregate)
    first = await commands.run_core("PublishProduct", request, product_pb2.Product, bump(aggregate), fold_replay=True)
    again = await commands.run_core("PublishProduct", request, product_pb2.Product, bump(aggregate), fold_replay=True)
    assert first == again and first.version == 2
    async with engine.connect() as conn:  # the replay did not bump again
        assert await conn.scalar(select(EFFECTS.c.version).where(EFFECTS.c.aggregate_id == aggregate)) == 2
    with pytest.raises(AlreadyExists) as refused:
        other = _request(request.request_id, "another")
        await commands.run_core("PublishProduct", other, product_pb2.Product, bump(aggregate), fold_replay=True)
    assert refused.value.reason == "REQUEST_ID_REUSED"
    with pytest.raises(NotFound):  # no row to update: the use case's own refusal
        missing = _request(uuid.uuid4().hex, "no-such-aggregate")
        await commands.run_core("PublishProduct", missing, product_pb2.Product, bump("no-such"), fold_replay=True)


async def test_concurrent_duplicates_with_a_folded_replay_update_once(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    commands, aggregate = await _seeded(engine, "fc")

    async def bump(tx: Tx) -> product_pb2.Product:
        row = await first_or_replay(tx, _BUMP_RETURNING, {"a": aggregate})
        stage_insert(tx, EFFECTS, {"event_id": uuid.uuid4().hex, "aggregate_id": aggregate, "version": row[1]})
        await asyncio.sleep(0.1)  # (the others are in their transactions meanwhile)
        return product_pb2.Product(product_id=aggregate, version=row[1])

    request = _request(uuid.uuid4().hex, aggregate)
    results = await asyncio.gather(
        *(commands.run_core("PublishProduct", request, product_pb2.Product, bump, fold_replay=True) for _ in range(4))
    )
    assert {r.version for r in results} == {2}
    async with engine.connect() as conn:  # the UPDATE took effect once: the losers rolled it back
        latest = select(EFFECTS.c.version).where(EFFECTS.c.aggregate_id == aggregate).order_by(EFFECTS.c.id.desc())
        assert await conn.scalar(latest.limit(1)) == 2
    assert await _count(engine, EFFECTS, aggregate) == 2


_EFFECT_VERSION = select(EFFECTS.c.aggregate_id, EFFECTS.c.version).where(EFFECTS.c.aggregate_id == bindparam("a"))


async def test_the_replay_read_and_a_plain_read_in_one(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    await _schema(engine)
    commands = Commands(engine)
    aggregate = f"rr-{uuid.uuid4().hex[:8]}"
    request = _request(uuid.uuid4().hex, aggregate)
    first = await commands.run_core("PublishProduct", request, product_pb2.Product, _decider(aggregate, []))

    def read(r: product_pb2.PublishProductRequest, a: str):  # type: ignore[no-untyped-def]
        return commands.replayed_or_read("PublishProduct", r, product_pb2.Product, _EFFECT_VERSION, {"a": a})

    assert await read(request, aggregate) == (first, None)  # seen: the first response, no row
    assert await read(_request(uuid.uuid4().hex, aggregate), aggregate) == (None, (aggregate, 1))
    assert await read(_request("", aggregate), aggregate) == (None, (aggregate, 1))  # no request_id: the row
    assert await read(_request(uuid.uuid4().hex, "missing"), "missing") == (None, None)
    with pytest.raises(AlreadyExists):
        await read(_request(request.request_id, "other"), aggregate)


_HAS_VERSION = exists(
    select(EFFECTS.c.id).where(EFFECTS.c.aggregate_id == bindparam("g_a"), EFFECTS.c.version >= bindparam("g_min"))
)


async def test_staged_rows_under_a_guard_go_in_all_or_none(kit_db) -> None:  # type: ignore[no-untyped-def]
    """``guard_staged``: on PostgreSQL the condition travels in the staged INSERT; when it does not
    hold the refusal is raised and nothing of the write remains (a statement before it included)."""
    _, engine = kit_db
    commands, aggregate = await _seeded(engine, "g")  # (one effect row, version 1)
    calls: list[int] = []
    staged = _decider(aggregate, calls)

    def guarded(minimum: int, *, bump: bool = False):  # type: ignore[no-untyped-def]
        async def decide(tx: Tx) -> product_pb2.Product:
            if bump:
                assert await tx.execute(_BUMP, {"a": aggregate}) == 1
            await guard_staged(
                tx, _HAS_VERSION, {"g_a": aggregate, "g_min": minimum}, lambda: NotFound("gone", reason="G")
            )
            return await staged(tx)

        return decide

    for minimum, bump in ((5, False), (5, True)):
        request = _request(uuid.uuid4().hex, aggregate)
        with pytest.raises(NotFound) as refused:
            await commands.run_core("PublishProduct", request, product_pb2.Product, guarded(minimum, bump=bump))
        assert refused.value.reason == "G"
        assert await commands.replayed("PublishProduct", request, product_pb2.Product) is None
    assert await _count(engine, EFFECTS, aggregate) == 1 and await _count(engine, OutboxRow.__table__, aggregate) == 1
    async with engine.connect() as conn:  # (the bump before the refused guard was rolled back)
        assert await conn.scalar(select(EFFECTS.c.version).where(EFFECTS.c.aggregate_id == aggregate)) == 1
    request = _request(uuid.uuid4().hex, aggregate)
    done = await commands.run_core("PublishProduct", request, product_pb2.Product, guarded(1))
    assert await commands.replayed("PublishProduct", request, product_pb2.Product) == done
    assert await _count(engine, EFFECTS, aggregate) == 2 and await _count(engine, OutboxRow.__table__, aggregate) == 2
