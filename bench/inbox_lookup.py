"""Benchmark: the inbox consumer's per-batch lookup on PostgreSQL as the tables grow (not a test).

Every consumer batch asks, in one round trip, which of its events were applied before (inbox,
by event id) and the stored versions of their aggregates (by aggregate type and id). This
fills ``aggregate_versions`` with ``--aggregates`` rows and the inbox with ``--inbox`` rows,
then times batches of ``--batch`` events (half already applied, ids drawn at random) through
the kit's own ``_load`` — side by side with the shape it replaced (versions matched by
aggregate id alone, which the (type, id) key cannot serve). asyncpg's statement cache makes
PostgreSQL switch to a generic plan after five executions, so the figures are split into the
first five batches and the rest.

Uses ZT_TEST_POSTGRES_URL when set, else starts its own PostgreSQL (devtools.stack).

    .venv/bin/python bench/inbox_lookup.py [--aggregates 300000] [--inbox 300000] [--batch 2000] [--rounds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from google.protobuf import empty_pb2  # noqa: E402
from sqlalchemy import BigInteger, String, literal, select, text, union_all  # noqa: E402

from devtools import stack  # noqa: E402
from services.kit.db import Base, UnitOfWork, create_engine, in_list  # noqa: E402
from services.kit.events import ReceivedEvent  # noqa: E402
from services.kit.inbox import _INBOX, _VERSIONS, _load  # noqa: E402

#: What ``_load`` ran before: aggregate ids alone, as one array (the key's leading column is the type).
_seen = select(
    _INBOX.c.event_id.label("a"), literal(None, String).label("b"), literal(None, BigInteger).label("v")
).where(in_list("postgresql", _INBOX.c.event_id, "ids"))
_col = _VERSIONS.c.aggregate_id
BEFORE = union_all(
    _seen, select(_VERSIONS.c.aggregate_type, _col, _VERSIONS.c.version).where(in_list("postgresql", _col, "aggs"))
)
NOW = datetime.now(UTC)


def event(event_id: str, aggregate_id: str) -> ReceivedEvent:
    return ReceivedEvent(
        id=event_id, type="bank.customer.changed", source="bench", subject="", time=NOW,
        aggregate_type="customer", aggregate_id=aggregate_id, version=2, message=empty_pb2.Empty(),
    )  # fmt: skip


def events(applied: list[str], aggregates: int, batch: int) -> list[ReceivedEvent]:
    old = random.sample(applied, batch // 2)
    new = [uuid.uuid4().hex for _ in range(batch - len(old))]
    return [event(event_id, f"c-{random.randrange(aggregates)}") for event_id in old + new]


async def run(url: str, args: argparse.Namespace) -> None:
    engine = create_engine(url, pool_size=1)  # one connection: one statement cache, as a consumer's
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(
            text("INSERT INTO aggregate_versions SELECT 'customer', 'c-' || g, 1 FROM generate_series(0, :n - 1) g"),
            {"n": args.aggregates},
        )
        await conn.execute(
            text(
                "INSERT INTO inbox SELECT md5(g::text), 't', 't', 0, g, 'applied', NULL, now() "
                "FROM generate_series(1, :n) g"
            ),
            {"n": args.inbox},
        )
        await conn.execute(text("ANALYZE"))
        applied = [r[0] for r in await conn.execute(text("SELECT event_id FROM inbox LIMIT 50000"))]
    timings: dict[str, list[float]] = {"before (aggregate id only)": [], "now (kit _load)": []}
    for _ in range(args.rounds):
        batch = events(applied, args.aggregates, args.batch)
        async with UnitOfWork(engine) as uow:
            keys = {"ids": [e.id for e in batch], "aggs": list({e.aggregate_id for e in batch})}
            started = time.perf_counter()
            await uow.session.execute(BEFORE, keys)
            timings["before (aggregate id only)"].append(time.perf_counter() - started)
        async with UnitOfWork(engine) as uow:
            started = time.perf_counter()
            await _load(uow.session, batch)
            timings["now (kit _load)"].append(time.perf_counter() - started)
    await engine.dispose()
    print(f"aggregate_versions rows {args.aggregates:,}, inbox rows {args.inbox:,}, batch {args.batch} events")
    for name, times in timings.items():
        first, later = times[:5], times[5:]
        print(
            f"{name:28} first 5 batches median {statistics.median(first) * 1000:8.1f} ms   "
            f"later (generic plan) median {statistics.median(later) * 1000:8.1f} ms"
        )
    ratio = statistics.median(timings["before (aggregate id only)"][5:]) / statistics.median(
        timings["now (kit _load)"][5:]
    )
    print(f"later batches, before/now: {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--aggregates", type=int, default=300_000)
    parser.add_argument("--inbox", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    pg = stack.postgres_for_tests()
    pg.start()
    try:
        asyncio.run(run(pg.create_database(f"bench_lookup_{uuid.uuid4().hex[:8]}"), args))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
