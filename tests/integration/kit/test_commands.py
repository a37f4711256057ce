"""The kit's command port on real PostgreSQL and SQLite: replay, fingerprint, races, outbox wake-up."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bank.product.v1 import product_pb2
from services.kit.commands import CommandRecord, Commands
from services.kit.errors import AlreadyExists

from .conftest import Effect


async def _schema(engine) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.run_sync(CommandRecord.metadata.create_all)


def _request(request_id: str, product_id: str = "p-1") -> product_pb2.PublishProductRequest:
    return product_pb2.PublishProductRequest(product_id=product_id, request_id=request_id)


async def _effects(engine, aggregate: str) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(Effect).where(Effect.aggregate_id == aggregate)))


def _decider(aggregate: str, calls: list[int]):  # type: ignore[no-untyped-def]
    async def decide(session: AsyncSession) -> product_pb2.Product:
        calls.append(1)
        session.add(Effect(event_id=uuid.uuid4().hex, aggregate_id=aggregate, version=len(calls)))
        return product_pb2.Product(product_id=aggregate, version=len(calls))

    return decide


async def test_a_retried_request_gets_the_first_response_and_decides_once(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    await _schema(engine)
    woken: list[int] = []
    commands = Commands(engine, after_commit=[lambda: woken.append(1)])
    aggregate, calls = f"a-{uuid.uuid4().hex[:8]}", []
    request = _request(uuid.uuid4().hex, aggregate)

    first = await commands.run("PublishProduct", request, product_pb2.Product, _decider(aggregate, calls))
    again = await commands.run("PublishProduct", request, product_pb2.Product, _decider(aggregate, calls))
    ahead = await commands.replayed("PublishProduct", request, product_pb2.Product)

    assert first == again == ahead and first.version == 1
    assert len(calls) == 1 and await _effects(engine, aggregate) == 1
    assert woken == [1]  # the relay is woken after the one commit, not for a replay
    # Another method may use the same request_id: keys are per method.
    other = await commands.run("RetireProduct", request, product_pb2.Product, _decider(aggregate, calls))
    assert other.version == 2


async def test_the_same_request_id_with_a_different_request_is_refused(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    await _schema(engine)
    commands = Commands(engine)
    request_id, calls = uuid.uuid4().hex, []
    await commands.run("PublishProduct", _request(request_id, "p-a"), product_pb2.Product, _decider("p-a", calls))
    with pytest.raises(AlreadyExists) as refused:
        await commands.run("PublishProduct", _request(request_id, "p-b"), product_pb2.Product, _decider("p-b", calls))
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert refused.value.violations[0].field == "request_id"
    assert len(calls) == 1


async def test_concurrent_duplicates_commit_once_and_all_get_the_winners_response(pg_kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = pg_kit_db
    await _schema(engine)
    commands = Commands(engine)
    aggregate, calls = f"race-{uuid.uuid4().hex[:8]}", []
    request = _request(uuid.uuid4().hex, aggregate)
    decide = _decider(aggregate, calls)

    async def slow(session: AsyncSession) -> product_pb2.Product:
        result = await decide(session)
        await asyncio.sleep(0.2)  # both are in their transactions before either commits
        return result

    results = await asyncio.gather(
        *(commands.run("PublishProduct", request, product_pb2.Product, slow) for _ in range(4))
    )
    assert len({r.SerializeToString() for r in results}) == 1
    assert await _effects(engine, aggregate) == 1  # the losers rolled back their effects


async def test_a_request_without_request_id_is_never_replayed(kit_db) -> None:  # type: ignore[no-untyped-def]
    _, engine = kit_db
    await _schema(engine)
    commands = Commands(engine)
    aggregate, calls = f"n-{uuid.uuid4().hex[:8]}", []
    for _ in range(2):
        await commands.run("PublishProduct", _request("", aggregate), product_pb2.Product, _decider(aggregate, calls))
    assert len(calls) == 2 and await _effects(engine, aggregate) == 2
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(CommandRecord)) == 0
