"""The classifier on what a real PostgreSQL raises when it loses a unit of work's connection —
at commit and between statements — and the pool serving the next unit of work on a new one.

(The outages of a whole cluster — stopped, refusing, starting up — are in tests/integration/db_outage.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.kit.db import UnitOfWork, create_engine
from services.kit.faults import is_infrastructure_error


async def _terminate(pg_url: str, pid: int) -> None:
    admin = create_engine(pg_url)
    try:
        async with admin.connect() as conn:
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    finally:
        await admin.dispose()


@pytest.mark.parametrize("lost_before", ["commit", "the next statement"])
async def test_a_connection_terminated_inside_a_unit_of_work_is_an_infrastructure_error_and_the_pool_moves_on(
    pg_url: str, lost_before: str
) -> None:
    engine = create_engine(pg_url, pool_size=1, ping_after_idle_s=3600.0)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id int PRIMARY KEY)"))
        with pytest.raises(Exception) as failed:
            async with UnitOfWork(engine) as uow:
                await uow.session.execute(text("INSERT INTO t VALUES (1)"))
                pid = int(await uow.session.scalar(text("SELECT pg_backend_pid()")))
                await _terminate(pg_url, pid)  # waits until the backend is gone
                if lost_before == "the next statement":
                    await uow.session.execute(text("INSERT INTO t VALUES (2)"))
                await uow.commit()
        assert is_infrastructure_error(failed.value), repr(failed.value)
        async with UnitOfWork(engine) as uow:  # a new connection; the lost transaction left nothing
            assert int(await uow.session.scalar(text("SELECT pg_backend_pid()"))) != pid
            assert await uow.session.scalar(text("SELECT count(*) FROM t")) == 0
    finally:
        await engine.dispose()


async def test_after_one_call_meets_a_dead_connection_the_other_pooled_connections_are_replaced_without_failing(
    pg_url: str,
) -> None:
    """What keeps a restart to one failed call per pool, not one per pooled connection, with no
    ping (busy connections): the first disconnect invalidates every connection older than it."""
    engine = create_engine(pg_url, pool_size=3, ping_after_idle_s=3600.0)
    try:
        uows = [UnitOfWork(engine) for _ in range(3)]
        pids = []
        for uow in uows:  # three connections in the pool
            await uow.__aenter__()
            pids.append(int(await uow.session.scalar(text("SELECT pg_backend_pid()"))))
        for uow in uows:
            await uow.__aexit__(None, None, None)
        for pid in pids:
            await _terminate(pg_url, pid)
        with pytest.raises(Exception) as failed:
            async with UnitOfWork(engine) as uow:
                await uow.session.scalar(text("SELECT 1"))
        assert is_infrastructure_error(failed.value)
        for _ in range(3):  # each of the two others (and the failed one) comes back new, no error
            async with UnitOfWork(engine) as uow:
                assert int(await uow.session.scalar(text("SELECT pg_backend_pid()"))) not in pids
    finally:
        await engine.dispose()
