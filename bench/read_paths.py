"""Benchmark: one primary-key read of a customer row, path by path, in one process (not a test).

    .venv/bin/python -m bench.read_paths [--calls 1000]

Against a throw-away PostgreSQL (devtools.stack), the ``customers`` table of the customer service
with a few rows, CPU µs per call (``time.process_time``, the median of 5 repetitions) of:

- the ORM ``select(CustomerRow)`` in a read session (``read_sessionmaker``, ADR 0026: what
  GetCustomer ran before ADR 0029);
- the same columns as a Core ``select`` in a read session, and on an ``AsyncConnection``;
- the kit's :class:`services.kit.Reader` (the Core statement compiled once, sent on the pool's
  asyncpg connection: what GetCustomer runs now);
- asyncpg's own pool ``fetchrow`` (the C-read cell's floor; no SQLAlchemy at all).

The gap between the first and the last rows is what SQLAlchemy's execution layer costs a read;
ADR 0029 keeps its pool and compiler and drops that layer on the hot reads. Results:
docs/perf/services.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import select

from devtools.stack import PostgresServer
from services.customer.store import _BY_ID, CustomerBase, CustomerRow
from services.kit import Reader, read_sessionmaker
from services.kit.db import create_engine


async def _reset(_conn: Any) -> None:
    return None


async def per_call_us(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    for _ in range(min(200, calls)):
        await fn()
    samples = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            await fn()
        samples.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(samples)


async def run(calls: int) -> None:
    with PostgresServer() as pg:
        url = pg.create_database("bench_reads")
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(CustomerBase.metadata.create_all)
            now = datetime.now(UTC)
            await conn.execute(
                CustomerRow.__table__.insert(),
                [
                    {"customer_id": f"c{n}", "full_name_enc": "x" * 60, "birth_date_enc": "x" * 60,
                     "national_id_enc": "x" * 60, "national_id_bidx": f"b{n}", "mobile_enc": "x" * 60,
                     "email_enc": "x" * 60, "status": 2, "kyc_verified": True, "risk_tolerance": None,
                     "risk_tolerance_expire_time": None, "version": 1, "create_time": now, "update_time": now}
                    for n in range(50)
                ],
            )  # fmt: skip
        reads, reader = read_sessionmaker(engine), Reader(engine)
        orm = select(CustomerRow).where(CustomerRow.customer_id == "c7")
        params = {"customer_id": "c7"}
        sql = (
            "SELECT customer_id, full_name_enc, birth_date_enc, national_id_enc, national_id_bidx, mobile_enc, "
            "email_enc, status, kyc_verified, risk_tolerance, risk_tolerance_expire_time, version, create_time, "
            "update_time FROM customers WHERE customer_id = $1"
        )
        pool = await asyncpg.create_pool(url.replace("postgresql+asyncpg", "postgresql"), min_size=2, max_size=2,
                                         reset=_reset)  # fmt: skip

        async def orm_session() -> Any:
            async with reads() as session:
                return (await session.scalars(orm)).one_or_none()

        async def core_session() -> Any:
            async with reads() as session:
                return (await session.execute(_BY_ID, params)).first()

        async def core_connection() -> Any:
            async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
                return (await conn.execute(_BY_ID, params)).first()

        paths: dict[str, Callable[[], Awaitable[Any]]] = {
            "ORM select in a read session (before)": orm_session,
            "Core select in a read session": core_session,
            "Core select on an AsyncConnection": core_connection,
            "kit Reader (Core compiled once, pool's asyncpg connection)": lambda: reader.first(_BY_ID, params),
            "asyncpg pool fetchrow (C-read's floor)": lambda: pool.fetchrow(sql, "c7"),
        }
        try:
            for name, fn in paths.items():
                print(f"{await per_call_us(fn, calls):8.1f} µs  {name}", flush=True)
        finally:
            await pool.close()
            await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    asyncio.run(run(parser.parse_args().calls))


if __name__ == "__main__":
    main()
