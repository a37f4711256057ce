"""The hub under infrastructure faults (real Kafka, PostgreSQL and hub processes).

- Its database refuses connections for 10 s under a steady event flow: no event is
  dead-lettered, the hub's readiness says NOT_SERVING while it cannot apply (its liveness stays
  SERVING), and every view converges afterwards.
- A hub killed with SIGKILL and restarted serves views from its database within 5 s, before it
  has its partitions back, and (static membership) consumes again within seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bank.datahub.v1 import datahub_pb2
from devtools.stack import _asyncpg_dsn, _pg_execute, _quote_ident, _with_database
from devtools.synth import Synth
from services.kit.db import create_engine
from services.kit.grpc_server import LIVENESS_SERVICE

from .conftest import META, converge, hub, namespace, read_all, send, stub, wait_until
from .test_hub import reference

SERVING = health_pb2.HealthCheckResponse.SERVING


async def health(target: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return -1
        return int(reply.status)


async def refuse_connections(pg_url: str, refuse: bool) -> None:
    """``ALLOW_CONNECTIONS false`` (new sessions get 55000 "not currently accepting connections")
    and every open session of the database terminated (57P01); or connections allowed again."""
    database = pg_url.rsplit("/", 1)[1].split("?")[0]
    admin = _asyncpg_dsn(_with_database(pg_url, "postgres"))
    statements = [f"ALTER DATABASE {_quote_ident(database)} WITH ALLOW_CONNECTIONS {'false' if refuse else 'true'}"]
    if refuse:
        statements.append(
            # (a test database name we made: letters, digits and underscores only)
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"  # noqa: S608
            " AND pid <> pg_backend_pid()"
        )
    await _pg_execute(admin, *statements)


async def test_a_database_refusing_connections_for_10s_holds_events_back_and_loses_none(  # type: ignore[no-untyped-def]
    kafka_server, pg_url, tmp_path
) -> None:
    bootstrap = kafka_server.bootstrap_servers
    prefix = f"f{uuid.uuid4().hex[:6]}"
    group = f"dh-fault-{uuid.uuid4().hex[:6]}"
    events = Synth(seed=41, customers=40, months=4, prefix=prefix, txn_scale=0.5).events()
    expected = await reference(events, tmp_path, prefix)
    ns = namespace()
    proc = hub(pg_url, bootstrap, tmp_path, topic_prefix=ns, group=group).start()
    engine = create_engine(pg_url)
    seen: dict[str, set[int]] = {"": set(), LIVENESS_SERVICE: set()}
    refusing = asyncio.Event()

    async def watch() -> None:
        while True:
            for service in seen:
                status = await health(proc.target, service)
                if refusing.is_set():
                    seen[service].add(status)
            await asyncio.sleep(0.2)

    async def flow() -> None:
        """A steady stream: a slice of the events every 0.4 s for ~16 s."""
        slices = 40
        size = -(-len(events) // slices)
        for start in range(0, len(events), size):
            await send(events[start : start + size], bootstrap, ns)
            await asyncio.sleep(0.4)

    watcher = asyncio.create_task(watch())
    try:
        producing = asyncio.create_task(flow())
        await asyncio.sleep(3)
        await refuse_connections(pg_url, True)
        refusing.set()
        await asyncio.sleep(10)
        refusing.clear()
        await refuse_connections(pg_url, False)
        await producing
        await converge(engine, prefix, expected, timeout=90)

        assert health_pb2.HealthCheckResponse.NOT_SERVING in seen[""], seen  # readiness said so
        assert seen[LIVENESS_SERVICE] == {SERVING}, seen  # never a reason to restart it
        await wait_until(lambda: _is(proc.target, SERVING), 10, "readiness SERVING again")
        log = proc.log_text()
        assert "batch held back by an infrastructure failure" in log
        assert "event dead-lettered" not in log
        assert await read_all(bootstrap, f"{ns}{group}.dlq", timeout=2) == []
    finally:
        watcher.cancel()
        await refuse_connections(pg_url, False)
        proc.stop()
        await engine.dispose()


async def _is(target: str, status: int) -> bool:
    return await health(target) == status


#: The target: views served again within 5 s of a restart (issue 20) ...
SERVED_WITHIN_S = 5.0
#: ... given at least half a core: this machine's other tenants (load average 10-25 on 2 cores
#: while suites run in parallel) may give the process a tenth of one, and then the wall clock
#: measures them. Its own cost is the CPU it spent until it served: at most half the target.
CPU_SHARE = 0.5


def assert_in_time(what: str, after: float, cpu: float, within_s: float = SERVED_WITHIN_S) -> None:
    share = cpu / after
    assert after < within_s or (share < CPU_SHARE and cpu < within_s * CPU_SHARE), (
        f"{what} {after:.2f} s after the restart, {cpu:.2f} s of CPU (a {share:.0%} share of a core)"
    )


@pytest.mark.parametrize("static", [True, False], ids=["static-member", "dynamic-member"])
async def test_a_killed_hub_serves_views_within_5s_of_its_restart_and_consumes_again(  # type: ignore[no-untyped-def]
    kafka_server, pg_url, tmp_path, static: bool
) -> None:
    """Views come from the database before the group is rejoined. A static member (the chart's
    pod name as ``group.instance.id``) gets its partitions back at once; a dynamic one after the
    dead member's session (10 s) times out."""
    bootstrap = kafka_server.bootstrap_servers
    prefix = f"r{uuid.uuid4().hex[:6]}"
    synth = Synth(seed=43, customers=12, months=3, prefix=prefix, txn_scale=0.3)
    events = synth.events()
    ns = namespace()
    env = {"ZT_DATAHUB_GROUP_INSTANCE_ID": f"hub-{uuid.uuid4().hex[:6]}"} if static else {}
    proc = hub(pg_url, bootstrap, tmp_path, topic_prefix=ns, **env).start()
    engine = create_engine(pg_url)
    customer_id = next(e.aggregate_id for e in events if e.aggregate_type == "customer")
    try:
        await send(events, bootstrap, ns)
        await converge(engine, prefix, await reference(events, tmp_path, prefix))
        proc.kill()

        restarted = time.monotonic()
        proc.start()
        channel, api = stub(proc.target)
        try:
            while True:
                try:
                    got = await api.GetCustomerView(
                        datahub_pb2.GetCustomerViewRequest(customer_id=customer_id), metadata=META, timeout=1.0
                    )
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() - restarted < 60, "no view 60 s after the restart"
                    await asyncio.sleep(0.05)
            served_after, cpu = time.monotonic() - restarted, proc.cpu_seconds()
            assert got.customer_id == customer_id
            assert_in_time("views served", served_after, cpu)

            # New events are applied again: static membership hands the partitions straight back.
            more = Synth(seed=44, customers=3, months=1, prefix=prefix + "n", txn_scale=0.3).events()
            new_id = next(e.aggregate_id for e in more if e.aggregate_type == "customer")
            await send(more, bootstrap, ns)

            async def applied() -> bool:
                try:
                    await api.GetCustomerView(
                        datahub_pb2.GetCustomerViewRequest(customer_id=new_id), metadata=META, timeout=1.0
                    )
                except grpc.aio.AioRpcError:
                    return False
                return True

            await wait_until(applied, 60, "a new customer's view after the restart")
            consuming_after, consuming_cpu = time.monotonic() - restarted, proc.cpu_seconds()
        finally:
            await channel.close()
        kind = "static" if static else "dynamic"
        print(
            f"\nhub restart ({kind}): views after {served_after:.2f} s ({cpu:.2f} s of CPU), "
            f"new events after {consuming_after:.2f} s"
        )
        # Static: the partitions come straight back. Dynamic: the dead member's 10 s session
        # (ZT_DATAHUB_SESSION_TIMEOUT_MS, was 30 s) runs out first.
        assert_in_time("new events applied", consuming_after, consuming_cpu, 8 if static else 25)
    finally:
        proc.stop()
        await engine.dispose()
