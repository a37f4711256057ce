"""A population's events -> a hub database -> monthly snapshots + the truth that followed them.

The snapshots are the hub's own (services/data_hub/snapshots.py, table ``dh_feature_snapshots``),
taken from the facts the hub's fold wrote; :func:`from_database` works the same on a hub's
production database. The truth is read from the facts *after* each snapshot date:

- **left** at L: the earlier of the moment every holding was closed, and the start of dormancy
  (the last transaction before at least :data:`DORMANT_GAP_DAYS` days without any);
- **opened** product p at time t: a holding of p opened at t.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.synth import SynthEvent
from services.data_hub import schema, snapshots, views
from services.data_hub.domain import DAY_US, Product, Rules
from services.data_hub.facts import apply_patches
from services.data_hub.fold import fold
from services.data_hub.main import MIGRATIONS
from services.kit.db import UnitOfWork, create_engine
from services.kit.migrations import upgrade

DORMANT_GAP_DAYS = 90
REPLAY_BATCH = 5_000

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _quiet(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class Truth:
    """What happened to one customer after any date (from the facts)."""

    left_us: int | None = None
    opens: list[tuple[int, str]] = field(default_factory=list)  # (open_us, product_id), by time


@dataclass
class Dataset:
    """Snapshot rows (one per customer and month start) with what the future held."""

    as_of: np.ndarray  # int64 epoch us
    customer: list[str]
    x: np.ndarray  # (rows, features)
    rules_churn: np.ndarray
    held: list[list[str]]
    eligible: list[list[str]]
    rules_offers: list[list[str]]
    truth: dict[str, Truth]
    end_us: int  # the newest fact: the truth is known up to here
    catalogue: dict[str, Product] = field(default_factory=dict)  # the products, by id (offers' features)

    def __len__(self) -> int:
        return len(self.customer)


async def replay(events: Sequence[SynthEvent], path: Path, progress: Progress = _quiet) -> AsyncEngine:
    """A fresh hub database at ``path`` (the hub's migrations) with the events' facts, written by
    the hub's own fold and fact writer (as the rebuild does)."""
    path.unlink(missing_ok=True)  # noqa: ASYNC240 - a scratch file, once, before the replay
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine, MIGRATIONS)
    await replay_more(engine, events, progress)
    return engine


async def replay_more(engine: AsyncEngine, events: Sequence[SynthEvent], progress: Progress = _quiet) -> None:
    """Apply more events to a hub database (batches of REPLAY_BATCH, one transaction each)."""
    for i in range(0, len(events), REPLAY_BATCH):
        patches = fold([e.received() for e in events[i : i + REPLAY_BATCH]])
        async with UnitOfWork(engine) as uow:
            await apply_patches(uow.session, await schema.active_tables(uow.session), patches)
            await uow.commit()
        progress("replay", min(i + REPLAY_BATCH, len(events)), len(events))


async def snapshot_all(engine: AsyncEngine, rules: Rules, progress: Progress = _quiet) -> int:
    """Take every due monthly snapshot (the command ``zhongtai models snapshot`` runs the same)."""
    async with UnitOfWork(engine) as uow:
        tables = await schema.active_tables(uow.session)
        months = await snapshots.due(uow.session, tables)
    rows = 0
    for k, month in enumerate(months):
        async with UnitOfWork(engine) as uow:
            rows += await snapshots.take(uow.session, tables, month, rules)
            await uow.commit()
        progress("snapshots", k + 1, len(months))
    return rows


def left_at(txn_us: Sequence[int], closes: Sequence[int | None], start_us: int, end_us: int) -> int | None:
    """When the customer left (None: not within the data): every holding closed, or the last
    transaction before a silence of DORMANT_GAP_DAYS (only known once that silence is over)."""
    gap = DORMANT_GAP_DAYS * DAY_US
    all_closed = max(c for c in closes) if closes and all(c is not None for c in closes) else None  # type: ignore[type-var]
    dormant = None
    txns = sorted(txn_us)
    prev = txns[0] if txns else start_us  # (facts may begin long after the opening)
    for t in [*txns, None]:
        if t is None:
            if end_us - prev >= gap:
                dormant = prev
            break
        if t - prev >= gap:
            dormant = prev
            break
        prev = max(prev, t)
    found = [v for v in (all_closed, dormant) if v is not None]
    return min(found) if found else None


async def truth(engine: AsyncEngine) -> tuple[dict[str, Truth], int]:
    async with UnitOfWork(engine) as uow:
        t = await schema.active_tables(uow.session)
        s = uow.session
        end_us = int((await s.execute(select(func.max(t.customers.c.last_event_us)))).scalar_one() or 0)
        txns: dict[str, list[int]] = {}
        for cid, post in (await s.execute(select(t.transactions.c.customer_id, t.transactions.c.post_us))).all():
            txns.setdefault(cid, []).append(int(post))
        holdings: dict[str, list[tuple[int | None, int | None, str]]] = {}
        h = t.holdings
        for cid, o, c, pid in await s.execute(select(h.c.customer_id, h.c.open_us, h.c.close_us, h.c.product_id)):
            holdings.setdefault(cid, []).append((o, c, pid))
        creates = dict((await s.execute(select(t.customers.c.customer_id, t.customers.c.create_us))).tuples().all())
    out: dict[str, Truth] = {}
    for cid, create in creates.items():
        hs = holdings.get(cid, [])
        if create is None or not hs:
            continue
        first = min([o for o, _, _ in hs if o is not None] or [create])
        out[cid] = Truth(
            left_at(txns.get(cid, []), [c for _, c, _ in hs], first, end_us),
            sorted((o, pid) for o, _, pid in hs if o is not None),
        )
    return out, end_us


async def from_database(engine: AsyncEngine) -> Dataset:
    """The snapshots stored in a hub database, with the truth from its facts."""
    tr, end_us = await truth(engine)
    fs = schema.feature_snapshots
    async with UnitOfWork(engine) as uow:
        rows = (await uow.session.execute(select(fs).order_by(fs.c.as_of_us, fs.c.customer_id))).mappings().all()
        catalogue = await views.load_catalogue(uow.session, await schema.active_tables(uow.session))
    keep = [r for r in rows if r["customer_id"] in tr]
    return Dataset(
        as_of=np.array([r["as_of_us"] for r in keep], dtype=np.int64),
        customer=[r["customer_id"] for r in keep],
        x=np.array([json.loads(r["features"]) for r in keep], dtype=np.float64).reshape(len(keep), -1),
        rules_churn=np.array([r["rules_churn"] for r in keep], dtype=np.float64),
        held=[json.loads(r["held"]) for r in keep],
        eligible=[json.loads(r["eligible"]) for r in keep],
        rules_offers=[json.loads(r["rules_offers"]) for r in keep],
        truth=tr,
        end_us=end_us,
        catalogue={p.product_id: p for p in catalogue},
    )


def concat(parts: Sequence[Dataset]) -> Dataset:
    """Several populations' rows as one dataset (their customer ids never collide: the seed is in
    them); the truth is known up to the earliest of their ends."""
    if len(parts) == 1:
        return parts[0]
    truth: dict[str, Truth] = {}
    for d in parts:
        truth.update(d.truth)
    return Dataset(
        as_of=np.concatenate([d.as_of for d in parts]),
        customer=[c for d in parts for c in d.customer],
        x=np.vstack([d.x for d in parts]),
        rules_churn=np.concatenate([d.rules_churn for d in parts]),
        held=[h for d in parts for h in d.held],
        eligible=[e for d in parts for e in d.eligible],
        rules_offers=[o for d in parts for o in d.rules_offers],
        truth=truth,
        end_us=min(d.end_us for d in parts),
        catalogue={pid: p for d in parts for pid, p in d.catalogue.items()},
    )


async def build(events: Sequence[SynthEvent], path: Path, rules: Rules, progress: Progress = _quiet) -> Dataset:
    engine = await replay(events, path, progress)
    try:
        await snapshot_all(engine, rules, progress)
        return await from_database(engine)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------
# Labels at a snapshot date
# ------------------------------------------------------------------------------------------

CHURN_FROM_DAYS, CHURN_TO_DAYS, XSELL_DAYS = 30, 120, 90
XSELL_US = XSELL_DAYS * DAY_US


def churn_rows(ds: Dataset, dates: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """(row indexes, labels) of the churn population at these dates: customers holding something
    who have not left and will not leave within 30 days; label = leaves within (T+30d, T+120d]."""
    idx, y = [], []
    for i, (t, cid, held) in enumerate(zip(ds.as_of, ds.customer, ds.held, strict=True)):
        if int(t) not in dates or not held:
            continue
        left = ds.truth[cid].left_us
        if left is not None and left <= t + CHURN_FROM_DAYS * DAY_US:
            continue
        idx.append(i)
        y.append(left is not None and left <= t + CHURN_TO_DAYS * DAY_US)
    return np.array(idx, dtype=np.int64), np.array(y, dtype=bool)


def opened_within(ds: Dataset, i: int, days: int = XSELL_DAYS) -> set[str]:
    t = int(ds.as_of[i])
    opens = ds.truth[ds.customer[i]].opens
    lo = bisect_right(opens, (t, "\uffff"))
    return {pid for when, pid in opens[lo:] if when <= t + days * DAY_US}


def churn_dates(ds: Dataset) -> list[int]:
    """Snapshot dates whose churn window (+ the dormancy confirmation) is inside the data."""
    horizon = (CHURN_TO_DAYS + DORMANT_GAP_DAYS) * DAY_US
    return sorted({int(t) for t in ds.as_of if int(t) + horizon <= ds.end_us})
