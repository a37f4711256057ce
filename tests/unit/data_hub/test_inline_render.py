"""Small consumer batches render their customers' views in their own transaction (HubProjection)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from devtools.synth import Synth
from services.data_hub import store
from services.data_hub.domain import Rules
from services.data_hub.projector import HubProjection
from services.kit.db import UnitOfWork

from . import support


async def test_inline_rendered_views_equal_the_worker_rendered_ones_and_go_to_the_publisher_once_committed(
    tmp_path: Path,
) -> None:
    events = Synth(seed=11, customers=12, months=3, prefix="il", txn_scale=0.5).events()
    reference = await support.projection(tmp_path / "ref.db")
    await support.apply(reference, events, batch_size=40)
    expected = await support.docs(reference)
    await reference.dispose()

    engine = await support.projection(tmp_path / "inline.db")
    wakes: list[bool] = []
    handed: list[store.View] = []

    def on_commit(render: bool, tables: store.Tables, ready: list[store.View]) -> None:
        wakes.append(render)
        handed.extend(ready)

    projection = HubProjection(on_commit=on_commit, rules=Rules(), inline_render_max=100)
    try:
        commits = 0
        for i in range(0, len(events), 40):
            async with UnitOfWork(engine) as uow:
                folded = projection.fold([support.received(e) for e in events[i : i + 40]])
                applied = await projection.apply(uow.session, folded)
                assert len(wakes) == commits  # not before the commit
                await uow.commit()
            assert applied is not None
            projection.committed(applied)  # (the consumer's call once the transaction committed)
            commits += 1
            assert len(wakes) == commits  # once per commit
            # whether the worker has views left to render: only after a catalogue change
            catalogue = any(type(e.payload).__name__.startswith("Product") for e in events[i : i + 40])
            assert wakes[-1] is catalogue
            async with UnitOfWork(engine) as uow:
                t = await store.active_tables(uow.session)
                touched = {e.payload.customer_id for e in events[i : i + 40] if hasattr(e.payload, "customer_id")}
                c = t.customers
                dirty = select(func.count()).select_from(c).where(c.c.dirty.is_(True), c.c.customer_id.in_(touched))
                # the batch's own customers are rendered at commit (a catalogue change may mark others)
                assert (await uow.session.execute(dirty)).scalar_one() == 0
        # Applying a batch wakes nobody: only ``committed`` does (the consumer calls it after the
        # commit, never for a batch that rolled back: tests/integration/kit/test_consumer.py).
        async with UnitOfWork(engine) as uow:
            await projection.apply(uow.session, projection.fold([support.received(events[0])]))
        assert len(wakes) == commits
        # The views handed to the publisher are the committed ones: the last one handed for a
        # customer is its stored document and version (unless a later catalogue render moved on).
        async with UnitOfWork(engine) as uow:
            t = await store.active_tables(uow.session)
            c = t.customers
            stored = {r.customer_id: (r.doc, r.version) for r in await uow.session.execute(select(c))}
        last = {cid: (doc, version) for cid, doc, version, _ in handed}
        assert last and all(stored[cid] == v for cid, v in last.items())
        await support.render_all(engine, Rules())  # what the worker still has to do (catalogue changes)
        assert await support.docs(engine) == expected
    finally:
        await engine.dispose()
