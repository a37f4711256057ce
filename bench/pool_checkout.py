"""Benchmark: what a read costs on a kept pooled connection and on one opened for it (not a test).

    .venv/bin/python -m bench.pool_checkout [--reads 100]

A PostgreSQL engine used to open an *overflow* connection for every checkout beyond its pool
size and close it at the return (ADR 0041). This prints, for one primary-key-sized read
(``SELECT pg_backend_pid()``), the CPU µs of this process and of the whole PostgreSQL server
(postmaster, live backends and the exited ones it reaped) per read: through the kit's
:class:`~services.kit.Reader` on a kept connection, and on a connection opened and closed for
the read (SQLAlchemy's ``NullPool``: what an overflow checkout did). Medians of 5 interleaved
repetitions against a throw-away PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from bench.services import pg_cpu
from devtools.stack import PostgresServer
from services.kit import Reader
from services.kit.db import create_engine

STATEMENT = select(func.pg_backend_pid())


async def _kept(engine: AsyncEngine, reads: int) -> None:
    reader = Reader(engine)
    for _ in range(reads):
        await reader.first(STATEMENT)


async def _opened(engine: AsyncEngine, reads: int) -> None:
    for _ in range(reads):
        async with engine.connect() as conn:
            await conn.execute(STATEMENT)


async def run(pg: PostgresServer, reads: int) -> dict[str, tuple[float, float]]:
    url = pg.create_database("pool_checkout")
    kept = create_engine(url, pool_size=2)
    churn = create_async_engine(url, poolclass=NullPool)
    ways = {"kept connection (Reader)": (_kept, kept), "connection opened for the read": (_opened, churn)}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for way, engine in ways.values():
            await way(engine, 5)  # (warm: the kept pool's connection, asyncpg's statement cache)
        for _ in range(5):
            for name, (way, engine) in ways.items():
                pg0, cpu0 = pg_cpu(pg.pid or 0)["pg"], time.process_time()
                await way(engine, reads)
                await asyncio.sleep(0.3)  # (PostgreSQL reaps the exited backends)
                pg1, cpu1 = pg_cpu(pg.pid or 0)["pg"], time.process_time()
                samples[name].append(((cpu1 - cpu0) / reads * 1e6, (pg1 - pg0) / reads * 1e6))
    finally:
        await kept.dispose()
        await churn.dispose()
    return {
        name: (statistics.median(s[0] for s in got), statistics.median(s[1] for s in got))
        for name, got in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=100)
    args = parser.parse_args()
    with PostgresServer() as pg:
        results = asyncio.run(run(pg, args.reads))
    print(f"CPU µs per read, medians of 5; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, (service, server) in results.items():
        print(f"  {name:32s} this process {service:7.0f}   PostgreSQL {server:7.0f}")


if __name__ == "__main__":
    main()
