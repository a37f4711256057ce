"""Monthly point-in-time snapshots on SQLite: no leakage, reproducible by replay."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from devtools.models import dataset
from devtools.population import Population
from services.data_hub import domain, features, schema, snapshots
from services.data_hub.domain import DAY_US, Rules
from services.kit.db import UnitOfWork

RULES = Rules()


async def _rows(engine, month: int) -> list[dict]:  # type: ignore[no-untyped-def]
    fs = schema.feature_snapshots
    async with UnitOfWork(engine) as uow:
        stmt = select(fs).where(fs.c.as_of_us == month).order_by(fs.c.customer_id)
        return [dict(r) for r in (await uow.session.execute(stmt)).mappings().all()]


async def _take(engine, month: int) -> None:  # type: ignore[no-untyped-def]
    async with UnitOfWork(engine) as uow:
        await snapshots.take(uow.session, await schema.active_tables(uow.session), month, RULES)
        await uow.commit()


async def test_a_later_event_never_changes_an_earlier_snapshot_and_a_replay_gives_the_same(tmp_path: Path) -> None:
    events = Population(seed=5, customers=25, months=8).events()
    months = snapshots.month_starts(int(events[0].time.timestamp() * 1e6), int(events[-1].time.timestamp() * 1e6))
    month = months[-3]
    before = [e for e in events if e.time.timestamp() * 1e6 <= month]
    assert 0 < len(before) < len(events)
    # 1. the snapshot taken live at T, when only the events up to T had arrived
    live = await dataset.replay(before, tmp_path / "live.db")
    await _take(live, month)
    taken = await _rows(live, month)
    assert len(taken) >= 15 and all(r["feature_version"] == features.VERSION for r in taken)
    # 2. the later events arrive: taking it again changes nothing
    await dataset.replay_more(live, events[len(before) :])
    await _take(live, month)
    assert await _rows(live, month) == taken
    await live.dispose()
    # 3. a replay of every event, snapshotted afterwards: the same rows (nothing after T leaks in)
    replayed = await dataset.replay(events, tmp_path / "replay.db")
    await _take(replayed, month)
    assert await _rows(replayed, month) == taken
    await replayed.dispose()


def test_a_holding_as_of_a_date_is_rebuilt_from_todays_row_and_the_flows_since() -> None:
    now = 1_000 * DAY_US
    h = domain.Holding(
        "s1", "wm-bond-r2", domain.TYPE_WEALTH, "CNY", 0, domain.HOLDING_CLOSED, 100 * DAY_US, 900 * DAY_US
    )
    then = snapshots.holding_as_of(h, 500 * DAY_US, flow_after=-70_000)  # 70k went out after day 500
    assert then is not None and then.state == domain.HOLDING_OPEN and then.close_us is None
    assert then.balance_micros == 70_000
    assert snapshots.holding_as_of(h, 50 * DAY_US, 0) is None  # not opened yet
    assert snapshots.holding_as_of(h, now, 0) == h


def test_month_starts() -> None:
    jan15, apr2 = 1_736_899_200_000_000, 1_743_552_000_000_000  # 2025-01-15, 2025-04-02 (UTC)
    assert snapshots.month_starts(jan15, apr2) == [1_738_368_000_000_000, 1_740_787_200_000_000, 1_743_465_600_000_000]
