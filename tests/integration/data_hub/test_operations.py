"""The operations API of the data hub on real Kafka and PostgreSQL: the churn watch-list, and the
dead-letter browser (scopes, validation, audit, replay exactly once, quarantine).

The poison is real: a PostgreSQL trigger refuses one transaction's row, so the hub's consumer
fails on that event, retries it and dead-letters it; the DLQ index picks it up. "Fixing the
cause" drops the trigger; the replay then applies the event once, however often it is asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence

import grpc
import pytest
from sqlalchemy import text

from bank.datahub.v1 import datahub_pb2, operations_pb2, operations_pb2_grpc
from devtools.synth import Synth, SynthEvent
from services.cli import DEV_SECRET
from services.data_hub.config import DEV_AUDIT_KEY
from services.data_hub.operations import ops_audit_chain
from services.kit.auth import mint_token
from services.kit.crypto import BlindIndex, parse_key
from services.kit.db import create_engine
from tests.integration.data_hub.conftest import META, error_details, hub, namespace, send, stub, wait_until

OPS = (("authorization", f"Bearer {mint_token(DEV_SECRET, ['ops:admin'], client_id='ops-tests')}"),)
DeadLetter = operations_pb2.DeadLetter
REFUSE = """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test: %', NEW.transaction_id; END $$"""
TRIGGER = """CREATE TRIGGER refuse_poison BEFORE INSERT ON dh_{set}_transactions FOR EACH ROW
WHEN (NEW.transaction_id LIKE 'poison-%') EXECUTE FUNCTION refuse_poison()"""


def poisoned(events: Sequence[SynthEvent], nth: int) -> SynthEvent:
    """A new transaction on the nth subscription that has one, newer than all its events."""
    posted = [e for e in events if e.payload.DESCRIPTOR.name == "TransactionPosted"]
    subs = sorted({e.aggregate_id for e in posted})
    last = max((e for e in posted if e.aggregate_id == subs[nth]), key=lambda e: e.version)
    top = max(e.version for e in events if e.aggregate_id == subs[nth])
    payload = type(last.payload)()
    payload.CopyFrom(last.payload)
    payload.transaction.transaction_id = f"poison-{nth}"
    payload.version = top + 1
    return dataclasses.replace(last, payload=payload, version=top + 1, event_id=uuid.uuid4().hex)


async def _dead(ops: operations_pb2_grpc.OperationsServiceStub, event_id: str) -> DeadLetter | None:
    page = await ops.ListDeadLetters(operations_pb2.ListDeadLettersRequest(), metadata=OPS, timeout=5)
    return next((d for d in page.dead_letters if d.event_id == event_id), None)


async def _in_the_feed(views, *dead: SynthEvent) -> None:  # type: ignore[no-untyped-def]
    """Events the hub dead-lettered are in their customer's event feed all the same (ADR 0062:
    the feed lists every event received, written with the record's dead inbox row)."""
    for event in dead:
        request = datahub_pb2.ListCustomerEventsRequest(customer_id=event.payload.customer_id, page_size=200)
        page = await views.ListCustomerEvents(request, metadata=META, timeout=5)
        assert event.event_id in {e.event_id for e in page.events}, event.event_id


async def _code(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value.code(), error_details(failed.value)[0] if failed.value.trailing_metadata() else ""


@pytest.mark.timeout(300)
async def test_watch_list_and_dead_letters_replayed_exactly_once(kafka_server, pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bootstrap, ns, prefix = kafka_server.bootstrap_servers, namespace(), f"o{uuid.uuid4().hex[:6]}"
    events = Synth(seed=5, customers=24, months=4, prefix=prefix, txn_scale=0.5).events()
    proc = hub(pg_url, bootstrap, tmp_path, topic_prefix=ns, ZT_DATAHUB_MAX_ATTEMPTS="2").start(120)
    engine = create_engine(pg_url)
    channel, views = stub(proc.target)
    ops = operations_pb2_grpc.OperationsServiceStub(channel)
    try:
        async with engine.begin() as conn:  # the cause: the hub's database refuses those rows
            await conn.execute(text(REFUSE))
            for name in ("a", "b"):
                await conn.execute(text(TRIGGER.format(set=name)))
        first, second = poisoned(events, 0), poisoned(events, 1)
        await send([*events, first, second], bootstrap, ns)

        async def both_dead() -> bool:
            return None not in (await _dead(ops, first.event_id), await _dead(ops, second.event_id))

        await wait_until(both_dead, 90, "the poison events in the dead letters")
        await _in_the_feed(views, first, second)

        await _watch_list(views, len({e.payload.customer_id for e in events if hasattr(e.payload, "customer_id")}))
        await _refusals(channel, ops)
        await _replay(ops, views, engine, first)
        await _quarantine(ops, second)

        async with engine.connect() as conn:
            methods = (await conn.execute(text("SELECT method, client_id, fields FROM ops_audit_log"))).all()
        assert {m for m, _, _ in methods} >= {"ListDeadLetters", "ReplayDeadLetter", "QuarantineDeadLetter"}
        assert {c for _, c, _ in methods} == {"ops-tests"}
        assert any(f.endswith(":REPLAYED") for _, _, f in methods) and any(f.endswith(":FAILED") for _, _, f in methods)
        report = await ops_audit_chain(BlindIndex(parse_key(DEV_AUDIT_KEY))).verify(engine)
        assert report.ok, str(report)
    finally:
        await channel.close()
        await engine.dispose()
        proc.stop()


async def _ranked(views) -> tuple[list[datahub_pb2.CustomerView], int]:  # type: ignore[no-untyped-def]
    """The whole watch-list, 3 per page; and the total the last page reported."""
    ranked: list[datahub_pb2.CustomerView] = []
    token = ""
    while True:
        page = await views.ListChurnRisks(
            datahub_pb2.ListChurnRisksRequest(page_size=3, page_token=token), metadata=META, timeout=5
        )
        ranked.extend(page.customer_views)
        token = page.next_page_token
        if not token:
            return ranked, page.total_size


async def _watch_list(views, population: int) -> None:  # type: ignore[no-untyped-def]
    # (keyset paging over a live ranking: a view re-rendered between two pages may move; the
    # listing is compared once the hub has settled, i.e. two walks in a row agree — and are not
    # empty: the views render after the events are applied, so the first walk may find none yet)
    previous: list[str] = []
    for _ in range(40):
        ranked, total = await _ranked(views)
        ids = [v.customer_id for v in ranked]
        if ids and ids == previous and len(ids) == total:
            break
        previous = ids
        await asyncio.sleep(0.5)
    assert 0 < len(ranked) == total < population
    keys = [(-v.churn_risk.score, v.customer_id) for v in ranked]
    assert keys == sorted(keys) and all(v.churn_risk.score > 0 and v.churn_risk.reasons for v in ranked)
    top = ranked[0].churn_risk.score
    high = await views.ListChurnRisks(datahub_pb2.ListChurnRisksRequest(min_score=top), metadata=META, timeout=5)
    assert high.total_size >= 1 and all(v.churn_risk.score >= top for v in high.customer_views)
    code, _ = await _code(
        views.ListChurnRisks(datahub_pb2.ListChurnRisksRequest(min_score=2), metadata=META, timeout=5)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def _refusals(channel, ops) -> None:  # type: ignore[no-untyped-def]
    views_only = (("authorization", f"Bearer {mint_token(DEV_SECRET, ['views:read'], client_id='nosy')}"),)
    code, _ = await _code(ops.ListDeadLetters(operations_pb2.ListDeadLettersRequest(), metadata=views_only, timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    bad_id = operations_pb2.GetDeadLetterRequest(dead_letter_id="x; DROP TABLE")
    assert (await _code(ops.GetDeadLetter(bad_id, metadata=OPS, timeout=5)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    no_reason = operations_pb2.QuarantineDeadLetterRequest(dead_letter_id="0-1", reason="")
    code, _ = await _code(ops.QuarantineDeadLetter(no_reason, metadata=OPS, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    missing = operations_pb2.GetDeadLetterRequest(dead_letter_id="0-999999")
    assert await _code(ops.GetDeadLetter(missing, metadata=OPS, timeout=5)) == (
        grpc.StatusCode.NOT_FOUND,
        "DEAD_LETTER_NOT_FOUND",
    )


async def _txn_count(views, customer_id: str) -> int:  # type: ignore[no-untyped-def]
    view = await views.GetCustomerView(
        datahub_pb2.GetCustomerViewRequest(customer_id=customer_id), metadata=META, timeout=5
    )
    return int(view.activity.txn_count_365d)


async def _replay(ops, views, engine, poison: SynthEvent) -> None:  # type: ignore[no-untyped-def]
    dead = await _dead(ops, poison.event_id)
    assert dead is not None and dead.state == DeadLetter.STATE_DEAD and "refused by the test" in dead.error
    assert dead.headers["ce_type"] == "bank.product.v1.TransactionPosted"
    assert dead.subject == poison.payload.customer_id and dead.topic.endswith("bank.subscription.v1")
    customer = poison.payload.customer_id
    before = await _txn_count(views, customer)
    replay = operations_pb2.ReplayDeadLetterRequest(dead_letter_id=dead.dead_letter_id)
    assert await _code(ops.ReplayDeadLetter(replay, metadata=OPS, timeout=10)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DEAD_LETTER_STILL_FAILING",
    )
    assert (await _dead(ops, poison.event_id)).state == DeadLetter.STATE_DEAD  # type: ignore[union-attr]
    async with engine.begin() as conn:  # the cause is fixed
        for name in ("a", "b"):
            await conn.execute(text(f"DROP TRIGGER refuse_poison ON dh_{name}_transactions"))
    done = await ops.ReplayDeadLetter(replay, metadata=OPS, timeout=10)
    assert done.state == DeadLetter.STATE_REPLAYED and done.replay_outcome == "APPLIED"
    assert done.resolved_by == "ops-tests" and done.resolve_time.seconds > 0
    for _ in range(2):  # asked again, with or without a request id: answered, never applied twice
        again = await ops.ReplayDeadLetter(
            operations_pb2.ReplayDeadLetterRequest(dead_letter_id=dead.dead_letter_id, request_id=uuid.uuid4().hex),
            metadata=OPS,
            timeout=10,
        )
        assert again.state == DeadLetter.STATE_REPLAYED and again.resolve_time == done.resolve_time
    assert await _txn_count(views, customer) == before + 1
    async with engine.connect() as conn:
        status = (
            await conn.execute(text("SELECT status FROM inbox WHERE event_id = :e"), {"e": poison.event_id})
        ).scalar_one()
        rows = (
            await conn.execute(text("SELECT count(*) FROM dh_a_transactions WHERE transaction_id = 'poison-0'"))
        ).scalar_one()
    assert (status, rows) == ("applied", 1)


async def _quarantine(ops, poison: SynthEvent) -> None:  # type: ignore[no-untyped-def]
    dead = await _dead(ops, poison.event_id)
    assert dead is not None
    ask = operations_pb2.QuarantineDeadLetterRequest(dead_letter_id=dead.dead_letter_id, reason="bad upstream data")
    parked = await ops.QuarantineDeadLetter(ask, metadata=OPS, timeout=5)
    assert parked.state == DeadLetter.STATE_QUARANTINED and parked.quarantine_reason == "bad upstream data"
    assert (await ops.QuarantineDeadLetter(ask, metadata=OPS, timeout=5)).state == DeadLetter.STATE_QUARANTINED
    replay = operations_pb2.ReplayDeadLetterRequest(dead_letter_id=dead.dead_letter_id)
    assert await _code(ops.ReplayDeadLetter(replay, metadata=OPS, timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DEAD_LETTER_QUARANTINED",
    )
    status = await ops.GetPipelineStatus(operations_pb2.GetPipelineStatusRequest(), metadata=OPS, timeout=5)
    assert (status.dead_letters_dead, status.dead_letters_replayed, status.dead_letters_quarantined) == (0, 1, 1)
    assert status.consuming and status.customers > 0
