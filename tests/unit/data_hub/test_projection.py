"""The projection on SQLite in-process: duplicates, reordering, stub-then-fill, replay, RFM in SQL."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bank.datahub.v1 import datahub_pb2
from devtools.synth import Synth, SynthEvent
from services.data_hub import store
from services.data_hub.domain import MICROS, Rules
from services.kit.db import UnitOfWork
from tests.unit.data_hub import support

SMALL = Synth(seed=11, customers=6, months=3, txn_scale=0.25)
# tmpfs when there is one: these are many tiny transactions, fsync would dominate
TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None
EVENTS = SMALL.events()
RULES = Rules()


def kafka_key(e: SynthEvent) -> str:
    """The partition key the contract gives each event: customer_id, or product_id for the catalogue."""
    return str(getattr(e.payload, "customer_id", "") or getattr(e.payload, "product_id", ""))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def project(events: list[SynthEvent], path: Path, batch_size: int = 40) -> dict[str, bytes]:
    engine = await support.projection(path)
    try:
        await support.apply(engine, events, batch_size=batch_size)
        return await support.docs(engine)
    finally:
        await engine.dispose()


IN_ORDER = run(project(EVENTS, Path(tempfile.mkdtemp(dir=TMP)) / "in-order.db"))


def test_the_synthetic_history_projects_every_customer() -> None:
    assert len(IN_ORDER) == SMALL.n
    view = datahub_pb2.CustomerView.FromString(next(iter(IN_ORDER.values())))
    assert view.customer_id and view.last_event_time.seconds > 0


def test_duplicates_change_nothing(tmp_path: Path) -> None:
    rng = random.Random(1)
    dupes = [e for e in EVENTS for _ in range(rng.choice((1, 1, 2, 3)))]  # redelivered, in place
    assert run(project(dupes, tmp_path / "dupes.db")) == IN_ORDER
    # and a full second delivery of the log after the first one
    assert run(project(EVENTS + EVENTS, tmp_path / "twice.db")) == IN_ORDER


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[SynthEvent], int]:
    """Any merge of the per-key streams (each key's order kept), in any batch size."""
    streams: dict[str, list[SynthEvent]] = defaultdict(list)
    for e in EVENTS:
        streams[kafka_key(e)].append(e)
    merged = support.interleave(streams, draw(st.randoms(use_true_random=False)))
    return merged, draw(st.sampled_from((9, 40, 1000)))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings())
def test_any_interleaving_that_keeps_per_key_order_gives_the_same_views(case: tuple[list[SynthEvent], int]) -> None:
    events, batch_size = case
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        assert run(project(events, Path(tmp) / "p.db", batch_size)) == IN_ORDER


def test_a_transaction_before_its_customer_creates_a_stub_that_fills_in(tmp_path: Path) -> None:
    customer = next(e.aggregate_id for e in EVENTS if e.payload.DESCRIPTOR.name == "CustomerRiskAssessed")
    own = [e for e in EVENTS if kafka_key(e) == customer]
    customer_events = [e for e in own if e.aggregate_type == "customer"]
    other = [e for e in own if e.aggregate_type != "customer"]
    products = [e for e in EVENTS if e.aggregate_type == "product"]

    async def scenario() -> None:
        engine = await support.projection(tmp_path / "stub.db")
        await support.apply(engine, other)
        stub = datahub_pb2.CustomerView.FromString((await support.docs(engine))[customer])
        assert stub.lifecycle_stage == datahub_pb2.LIFECYCLE_STAGE_PROSPECT
        assert stub.holdings and stub.position and not stub.full_name_masked and not stub.offers
        await support.apply(engine, customer_events + products)
        filled = (await support.docs(engine))[customer]
        await engine.dispose()
        reference = await project(own + products, tmp_path / "ref.db")
        assert filled == reference[customer]
        view = datahub_pb2.CustomerView.FromString(filled)
        assert view.full_name_masked and view.status == 2 and view.lifecycle_stage != 1 and view.offers

    run(scenario())


def test_replaying_into_the_other_table_set_gives_equal_views(tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = await support.projection(tmp_path / "replay.db")
        await support.apply(engine, EVENTS, batch_size=13)
        await support.apply(engine, EVENTS, batch_size=500, set_name="b")
        live, rebuilt = await support.docs(engine, "a"), await support.docs(engine, "b")
        await engine.dispose()
        assert live == rebuilt == IN_ORDER

    run(scenario())


def test_rfm_quintiles_in_sql_on_a_known_population(tmp_path: Path) -> None:
    """Ten customers: customer i has i transactions, last one i days before now, balance i*1000.

    With NTILE(5) the two lowest of each measure score 1, ..., the two highest 5.
    """
    from bank.customer.v1 import events_pb2 as cev
    from bank.product.v1 import events_pb2 as pev
    from bank.product.v1 import product_pb2
    from devtools import synth as sy

    now = datetime(2025, 6, 30, tzinfo=UTC)
    events: list[SynthEvent] = []
    n = 0

    def ev(payload, agg_type: str, agg_id: str, version: int, when: datetime) -> None:  # type: ignore[no-untyped-def]
        nonlocal n
        n += 1
        events.append(SynthEvent(payload, "test", agg_type, agg_id, version, when, f"e{n}"))

    for i in range(1, 11):
        cid, sid = f"k{i:02d}", f"s{i:02d}"
        created = now - timedelta(days=800)
        snap = cev.CustomerSnapshot(customer_id=cid, status=2, kyc_verified=True, version=2, create_time=sy.ts(created))
        ev(
            cev.CustomerVerified(customer_id=cid, customer=snap, version=2, occur_time=sy.ts(created)),
            "customer",
            cid,
            2,
            created,
        )
        sub = product_pb2.Subscription(
            subscription_id=sid,
            customer_id=cid,
            product_id="dep",
            product_type=1,
            amount=sy.money(0),
            balance=sy.money(0),
            state=1,
            create_time=sy.ts(created),
        )
        ev(
            pev.SubscriptionOpened(
                customer_id=cid, subscription_id=sid, subscription=sub, version=1, occur_time=sy.ts(created)
            ),
            "subscription",
            sid,
            1,
            created,
        )
        # recency: customer 10 transacted 1 day ago, customer 1 ten days ago -> reverse the order
        for k in range(i):
            when = now - timedelta(days=11 - i, hours=k)
            txn = product_pb2.Transaction(
                transaction_id=f"t{i}-{k}",
                direction=1,
                amount=sy.money(100),
                balance_after=sy.money(i * 100_000),
                post_time=sy.ts(when),
            )
            ev(
                pev.TransactionPosted(
                    customer_id=cid,
                    subscription_id=sid,
                    product_id="dep",
                    product_type=1,
                    transaction=txn,
                    version=2 + k,
                    occur_time=sy.ts(when),
                ),
                "subscription",
                sid,
                2 + k,
                when,
            )
    # One closed and one new customer stay out of the population.
    for cid, status, created in (("x-closed", 3, now - timedelta(days=800)), ("x-new", 2, now - timedelta(days=5))):
        snap = cev.CustomerSnapshot(
            customer_id=cid, status=status, kyc_verified=True, version=3, create_time=sy.ts(created)
        )
        ev(
            cev.CustomerUpdated(customer_id=cid, customer=snap, version=3, occur_time=sy.ts(created)),
            "customer",
            cid,
            3,
            created,
        )

    async def scenario() -> dict[str, tuple[int, int, int]]:
        engine = await support.projection(tmp_path / "rfm.db")
        await support.apply(engine, events)
        async with UnitOfWork(engine) as uow:
            scored = await store.refresh_rfm(uow.session, store.SETS["a"], RULES, int(now.timestamp() * MICROS))
            await uow.commit()
        assert scored == 10
        await support.render_all(engine, RULES)
        c = store.SETS["a"].customers
        async with UnitOfWork(engine) as uow:
            rows = (await uow.session.execute(select(c.c.customer_id, c.c.r, c.c.f, c.c.m, c.c.segment))).all()
            seg_counts = dict(
                (await uow.session.execute(select(c.c.segment, func.count()).group_by(c.c.segment))).tuples().all()
            )
        await engine.dispose()
        assert seg_counts[datahub_pb2.SEGMENT_HIGH_VALUE] == 4  # quintiles 4 and 5 in all three
        assert seg_counts[datahub_pb2.SEGMENT_NEW] == 1
        return {r.customer_id: (r.r, r.f, r.m) for r in rows}

    scores = run(scenario())
    for i in range(1, 11):
        q = (i + 1) // 2
        assert scores[f"k{i:02d}"] == (q, q, q), i
    assert scores["x-closed"] == (0, 0, 0) and scores["x-new"] == (0, 0, 0)
