"""Benchmark: data hub bulk ingest on PostgreSQL vs the raw aiokafka consume rate (not a test).

Uses ZT_TEST_KAFKA_BOOTSTRAP / ZT_TEST_POSTGRES_URL when set, else starts its own Apache Kafka
and PostgreSQL (devtools.stack). Each run uses its own topic namespace (ZT_KAFKA_TOPIC_PREFIX),
so runs on one broker do not add up. Then:

1. produces a seeded synthetic history (devtools.synth: customers, subscriptions, months of
   transactions) to bank.customer.v1 / bank.product.v1 / bank.subscription.v1;
2. **raw**: one AIOKafkaConsumer (same settings as the hub's: read_committed, manual
   assignment of every partition) reads every record of the three topics and does nothing;
3. **hub**: the data hub's own ``serve()`` (inbox consumer -> batch-apply -> view worker ->
   view topic) on a fresh PostgreSQL database and a fresh consumer group, timed until the group
   (which also writes the customer event feed, a row per customer event, ADR 0062; a checkout
   before it: and the hub's event-log index, its own group) has committed every offset, and
   then until no view is left dirty.

Prints events/s for both and their ratio (targets: hub >= 10,000 events/s, ratio >= 0.5).

    .venv/bin/python bench/data_hub_ingest.py [--customers 1000] [--months 6] [--hubs 2]

``BENCH_HUB_LOG=DEBUG`` logs the in-process hub's per-batch timings ("batch applied": lookups,
fold, waiting for the previous write, the projection's write, inbox rows and commit).

``BENCH_REPO=<checkout>`` runs that checkout's hub (e.g. a "before" worktree of main) with this
script, for paired runs with the same accounting:

    BENCH_REPO=/tmp/before PYTHONPATH=/tmp/before .venv/bin/python bench/data_hub_ingest.py

Before the figures, hub phases left out of them warm the broker up until its JIT compilers are
quiet (``--warm N``, at most N of them; ``--warm 0`` measures a freshly started broker): the
broker spent 20 µs an event in the first hub phase after its start and 8–13 in the next four
(2026-12-07); a broker in service has long been warm (ADR 0066). ``--repeat 3`` runs the measured
hub phase three times on the same broker, each on a fresh database and consumer group.

``--floor`` runs, before each hub phase, the floor cells (ADR 0068): the same events consumed
with a group and decoded only; and folded with their transaction rows written; and the customer
event feed's rows too — with the hub's own code. Each prints the whole machine's CPU per event
beside the hub's: the least a hub that keeps these rows must spend.

``--hubs 2`` runs a second hub process in the same consumer group, as the chart's two data hub
replicas do: the group splits the partitions between them.

``--compare-repo <checkout> --pairs 4`` instead compares this checkout's hub with another's on
the same broker, PostgreSQL and events, phases alternating (ABBA…): each hub is a process of its
own checkout (``python -m services.cli data_hub``, its own settings and lifecycle), on a fresh
database (migrated by that checkout before the clock) and group, counted from the moment its
group has joined (the group Stable: the process's start-up does not count; every event's fetch,
decode and write does) to its last commit. Separate invocations of this
script drift ±25 % here, even for the same code (docs/perf/data_hub.md, "Wave 14"); phases of
one invocation share the broker's and PostgreSQL's state. The other checkout must write the
feed in the hub's own group (ADR 0062 onwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# BENCH_REPO=<a checkout>: run that checkout's hub with this script (paired runs against a
# "before" checkout measure both with the same accounting).
HERE = Path(__file__).resolve().parents[1]  # this checkout
REPO = Path(os.environ.get("BENCH_REPO") or HERE)
sys.path[:0] = [str(REPO)]

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from devtools import stack  # noqa: E402
from devtools.synth import Synth, produce  # noqa: E402
from services.cli import DEV_SECRET  # noqa: E402
from services.data_hub import event_log, store  # noqa: E402
from services.data_hub import fold as fold_module  # noqa: E402
from services.data_hub.config import TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION  # noqa: E402
from services.data_hub.fold import fold  # noqa: E402
from services.data_hub.main import MIGRATIONS, TOPICS, DataHubSettings, serve  # noqa: E402
from services.data_hub.rebuild import partitions_of  # noqa: E402
from services.data_hub.schema import TRANSACTION_KEY  # noqa: E402
from services.kit import bulk_insert_statement, bulk_writes, parse_record  # noqa: E402

try:  # (a checkout before ADR 0068 inserts every batch's rows with one statement)
    from services.kit import copy_insert
except ImportError:  # pragma: no cover
    copy_insert = None  # type: ignore[assignment]
from services.kit.db import UnitOfWork, create_engine  # noqa: E402
from services.kit.kafka import ensure_topics  # noqa: E402
from services.kit.migrations import upgrade  # noqa: E402
from tests.support.procs import JIT_QUIET_SHARE, base_env, cpu_seconds, jit_cpu_seconds, tree_cpu_seconds  # noqa: E402


async def _from_the_start(
    bootstrap: str, ns: str, group_id: str | None, max_records: int
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer (the hub's read settings) on every partition of the run's topics, at
    their first offsets."""
    tps = await partitions_of(bootstrap, tuple(ns + t for t in TOPICS))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=20,
        max_poll_records=max_records,
    )
    await consumer.start()
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer, tps


async def raw_rate(bootstrap: str, ns: str) -> tuple[int, float, float]:
    consumer, tps = await _from_the_start(bootstrap, ns, None, 500)
    try:
        end = await consumer.end_offsets(tps)
        total = sum(end.values())
        seen = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        while seen < total:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            seen += sum(len(v) for v in batch.values())
        return total, time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await consumer.stop()


#: ``--floor``: the least work any hub that keeps these rows must do, on the same events and
#: servers as the hub phase (ADR 0068): each cell consumes every record with a consumer group
#: (the hub's settings), commits the group's offsets after each poll's database commit, and
#: stores what its name says with the hub's own code — its decode, its fold, its statements.
FLOOR_CELLS = ("decode", "transactions", "transactions+feed")


#: A table's rows for ``_insert_rows``: the rows, their columns' order (None: dicts), the key.
_TableRows = tuple[list[Any], tuple[str, ...] | None, tuple[str, ...]]


async def _insert_rows(session: Any, rows: dict[Any, _TableRows]) -> None:
    """Each table's rows (tuples in the named columns' order, or dicts where ``None``: a checkout
    before ADR 0071), insert-if-absent on its key, as the hub's batch writes them: COPY from
    ``COPY_MIN_ROWS`` rows on where the checkout has it (ADR 0068), else one statement of CTEs."""
    if copy_insert is not None:
        for table, (table_rows, columns, key) in rows.items():
            if columns is None:
                await copy_insert(session, table, table_rows, skip_conflicts_on=key)
            else:
                await copy_insert(session, table, table_rows, columns=columns, skip_conflicts_on=key)
        return
    statements = [
        bulk_insert_statement(table, table_rows, skip_conflicts_on=key, param=f"rows_{i}")
        for i, (table, (table_rows, _columns, key)) in enumerate(rows.items())
        if table_rows
    ]
    await bulk_writes(session, statements)


async def floor_rate(bootstrap: str, url: str, ns: str, cell: str, total: int, max_records: int) -> tuple[float, float]:
    """One floor cell (:data:`FLOOR_CELLS`) on its own database and group, polls of up to
    ``max_records`` (the hub phase's batch): (seconds, this process's CPU seconds).

    - ``decode``: every record decoded (``parse_record``, as the hub's consumer), nothing stored;
    - ``transactions``: and the hub's fold of each poll, its transaction rows inserted as the
      hub inserts them (insert-if-absent on the key; :func:`_insert_rows`), one transaction a poll;
    - ``transactions+feed``: and the customer event feed's rows (ADR 0062) in the same transaction.

    What the hub does beyond the last cell — the customers' and holdings' rows, the aggregate
    versions and inbox lookup, the views rendered and published — is the hub phase's remainder."""
    tables = store.SETS[store.SET_NAMES[0]]
    feed_topics = frozenset((ns + TOPIC_CUSTOMER, ns + TOPIC_SUBSCRIPTION))
    feed_key = getattr(event_log, "FEED_KEY", ("event_id",))  # (ADR 0068; before it, by id)
    # The rows' columns where they are tuples (ADR 0071; before it, dicts: None)
    txn_columns = getattr(fold_module, "TRANSACTION_COLUMNS", None)
    feed_columns = getattr(event_log, "FEED_COLUMNS", None)
    engine = create_engine(url)
    await upgrade(engine, MIGRATIONS)  # (before the clock, as in the hub phase)
    consumer, _ = await _from_the_start(bootstrap, ns, f"floor-{uuid.uuid4().hex[:8]}", max_records)
    try:
        seen, started, cpu_started = 0, time.perf_counter(), time.process_time()
        while seen < total:
            polled = await consumer.getmany(timeout_ms=200, max_records=max_records)
            events = [
                parse_record(r.headers, r.value, key=r.key, topic=r.topic, partition=r.partition, offset=r.offset)
                for records in polled.values()
                for r in records
            ]
            seen += len(events)
            if cell != "decode" and events:
                rows = {tables.transactions: (list(fold(events).transactions.values()), txn_columns, TRANSACTION_KEY)}
                if cell == "transactions+feed":
                    rows[event_log.customer_events] = (event_log.feed_rows(events, feed_topics), feed_columns, feed_key)
                async with UnitOfWork(engine) as uow:
                    await _insert_rows(uow.session, rows)
                    await uow.commit()
            if polled:
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in polled.items() if records})
        return time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await consumer.stop()
        await engine.dispose()


class CommitWatcher:
    """Has every group committed every offset of its topics? One admin client for the whole wait,
    and the end offsets read once (nothing is produced during the hub phase): polling it every
    100 ms costs the hub, which runs in this process, next to nothing.

    The groups: the hub's consumer and, in a checkout before ADR 0062, its event-log index
    (``<group>.event-log``, which read the customer and subscription topics once more and stored
    a row per event): the ingest is done when both are, so the CPU counted is all the work the
    events cause."""

    def __init__(self, bootstrap: str, groups: dict[str, tuple[str, ...]]) -> None:
        self._bootstrap, self._groups = bootstrap, groups
        self._topics = tuple(sorted({t for topics in groups.values() for t in topics}))
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._end: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> CommitWatcher:
        tps = await partitions_of(self._bootstrap, self._topics)
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None)
        await consumer.start()
        try:
            self._end = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    async def done(self) -> bool:
        return (await self.progress())[0]

    async def joined(self) -> bool:
        """Has the first group's member joined (the group Stable, its partitions assigned)? Its
        fetches start then: the CPU from here on is the events' work, not the start-up's."""
        group = next(iter(self._groups))
        try:
            (response,) = await self._admin.describe_consumer_groups([group])
        except KafkaError:  # (no coordinator yet)
            return False
        return any(g[1] == group and g[2] == "Stable" for g in response.groups)

    async def progress(self) -> tuple[bool, int]:
        """Whether every group has committed every offset; and how many events the first group
        has committed so far (0 before its first commit)."""
        first = 0
        for n, (group, topics) in enumerate(self._groups.items()):
            try:
                committed = await self._admin.list_consumer_group_offsets(group)
            except KafkaError:  # e.g. the group coordinator is not there yet on a fresh broker
                return False, first
            ends = [(tp, end) for tp, end in self._end.items() if tp.topic in topics]
            if n == 0:
                first = sum(min(committed[tp].offset, end) for tp, end in ends if tp in committed)
            if not all(tp in committed and committed[tp].offset >= end for tp, end in ends):
                return False, first
        return True, first


def _more_hubs(n: int, settings: DataHubSettings) -> list[subprocess.Popen[bytes]]:
    """``n`` more hub processes (``python -m services.cli data_hub``), members of the same
    consumer group with the same database: the group splits the partitions between them."""
    env = base_env(
        ZT_DATABASE_URL=settings.database_url, ZT_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        ZT_KAFKA_TOPIC_PREFIX=settings.kafka_topic_prefix, ZT_DATAHUB_GROUP_ID=settings.datahub_group_id,
        ZT_LOG_LEVEL="WARNING", ZT_DATAHUB_MAX_RECORDS=str(settings.datahub_max_records), ZT_DATABASE_POOL_SIZE="5",
    )  # fmt: skip
    return [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "data_hub"],
            env={**env, "ZT_GRPC_PORT": str(stack.free_port())},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]


#: servers_cpu()'s key of the broker's JIT compilers' CPU (a part of its "Kafka")
JIT = "Kafka JIT"


def servers_cpu(kafka: object, pg: object) -> dict[str, float]:
    """CPU seconds so far of the broker's JVM and of PostgreSQL (postmaster and backends); NaN for
    servers not started here (external or containers)."""
    out = {}
    for name, server in (("PostgreSQL", pg), ("Kafka", kafka)):
        pid = getattr(server, "pid", None)
        out[name] = tree_cpu_seconds(pid) if pid else float("nan")
    kafka_pid = getattr(kafka, "pid", None)  # (of the broker's: its JIT compilers, the JVM's warm-up)
    out[JIT] = jit_cpu_seconds(kafka_pid) if kafka_pid else float("nan")
    return out


async def hub_rate(
    bootstrap: str,
    url: str,
    max_records: int,
    ns: str,
    hubs: int = 1,
    probe: Callable[[], dict[str, float]] = dict,
    model_path: str = "",
    cpu_rendered: list[float] | None = None,
    steady: dict[str, float] | None = None,
) -> tuple[float, float, int, float, dict[str, float]]:
    """One hub phase: (seconds until every offset was committed, until every view was rendered,
    views, the hub's CPU seconds until committed, the servers' CPU seconds meanwhile). ``steady``,
    if given (one hub process), gets the CPU µs per event of the hub and of each server from the
    moment the group has joined to its last commit (no start-up; ``events``: how many), as
    ``--compare-repo`` counts them. (Not from the first commit: the overlapped consumer has
    fetched, decoded and staged the next batches by then, work of events counted after it.)"""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    settings = DataHubSettings(
        database_url=url,
        kafka_bootstrap_servers=bootstrap,
        kafka_topic_prefix=ns,
        datahub_group_id=group,
        grpc_port=stack.free_port(),  # (0 would mean the default port, maybe taken by another hub)
        environment="test",
        log_level=os.environ.get("BENCH_HUB_LOG", "WARNING"),
        auth_hs256_secret=DEV_SECRET,
        datahub_max_records=max_records,
        database_pool_size=5,
        datahub_model_path=model_path,
    )  # type: ignore[call-arg]
    stop = asyncio.Event()
    engine = create_engine(url)
    # The schema exists before the clock starts (as the chart's migration Job makes it before
    # the hubs start): several members would otherwise race to create it.
    await upgrade(engine, MIGRATIONS)
    watched = {ns + group: tuple(ns + t for t in TOPICS)}  # (the namespace covers the groups)
    if hasattr(event_log, "event_log_index"):  # a checkout before ADR 0062: the feed's own group
        watched[f"{ns}{group}.event-log"] = (ns + TOPIC_CUSTOMER, ns + TOPIC_SUBSCRIPTION)
    async with CommitWatcher(bootstrap, watched) as watcher:
        servers_before = probe()
        started = time.perf_counter()
        cpu_started = time.process_time()
        # The other members start with this one (their start-up time counts against them).
        members = _more_hubs(hubs - 1, settings)
        task = asyncio.create_task(serve(settings, stop))
        try:

            def alive() -> None:
                if task.done():
                    task.result()

            committed, joined = await _until_committed(
                watcher, time.process_time, probe, alive, mark_join=steady is not None and hubs == 1
            )
            consumed = time.perf_counter() - started
            cpu_now = time.process_time() + sum(cpu_seconds(m.pid) for m in members)
            cpu = cpu_now - cpu_started
            servers_now = probe()
            servers = {k: v - servers_before[k] for k, v in servers_now.items()}
            if steady is not None and joined is not None:
                steady.update(_per_event(joined, committed, cpu_now, servers_now), events=committed)
            while True:
                async with UnitOfWork(engine) as uow:
                    t = await store.active_tables(uow.session)
                    c = t.customers
                    dirty = (
                        await uow.session.execute(select(func.count()).select_from(c).where(c.c.dirty.is_(True)))
                    ).scalar_one()
                    views = (await uow.session.execute(select(func.count()).select_from(c))).scalar_one()
                if not dirty:
                    break
                await asyncio.sleep(0.05)
            rendered = time.perf_counter() - started
            if cpu_rendered is not None:  # (this process only: --hubs 1)
                cpu_rendered.append(time.process_time() - cpu_started)
        finally:
            for member in members:
                member.terminate()
            for member in members:
                member.wait(30)
            stop.set()
            with contextlib.suppress(Exception):
                await task
            await engine.dispose()
    return consumed, rendered, int(views), cpu, servers


async def compare_model(args: argparse.Namespace, bootstrap: str, pg: Any, ns: str, total: int) -> int:
    """The scoring's CPU cost: the rules vs a trained artifact, alternating, same events."""
    import statistics

    ratios = []
    for pair in range(args.pairs):
        us: dict[str, float] = {}
        for label in ("rules", "model") if pair % 2 == 0 else ("model", "rules"):
            url = pg.create_database(f"bench_hub_{uuid.uuid4().hex[:8]}")
            cpu: list[float] = []
            await hub_rate(bootstrap, url, args.max_records, ns, 1, dict,
                           args.compare_model if label == "model" else "", cpu)  # fmt: skip
            us[label] = cpu[0] / total * 1e6
            print(f"pair {pair + 1} {label}: hub CPU until every view rendered {us[label]:.0f} µs/event")
        ratios.append(us["model"] / us["rules"])
    print(f"model/rules CPU per event: median {statistics.median(ratios):.3f} "
          f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.10)")  # fmt: skip
    return 0


async def compare_repo(
    args: argparse.Namespace, bootstrap: str, pg: Any, ns: str, total: int, probe: Callable[[], dict[str, float]]
) -> int:
    """This checkout's hub against ``--compare-repo``'s, alternating on the same servers and events
    (see the module doc); prints each phase, then the medians and the per-pair ratio."""
    import statistics

    sides = {"this": HERE, "other": args.compare_repo}
    wholes: dict[str, list[float]] = {label: [] for label in sides}
    parts_of: dict[str, list[dict[str, float]]] = {label: [] for label in sides}
    for pair in range(args.pairs):
        for label in ("this", "other") if pair % 2 == 0 else ("other", "this"):
            parts = await hub_process_phase(sides[label], bootstrap, pg, ns, args.max_records, probe)
            jit = parts.pop(JIT)
            whole = sum(parts.values())
            wholes[label].append(whole)
            parts_of[label].append(parts)
            shown = " + ".join(f"{k} {v:.1f}" for k, v in parts.items())
            print(f"pair {pair + 1} {label}: {shown} = {whole:.1f} µs/event (of Kafka's, JIT {jit:.1f})", flush=True)
    for label, repo in sides.items():
        median = {k: statistics.median(p[k] for p in parts_of[label]) for k in parts_of[label][0]}
        shown = " + ".join(f"{k} {v:.1f}" for k, v in median.items())
        print(f"{label} ({repo}): median whole machine {statistics.median(wholes[label]):.1f} µs/event ({shown})")
    ratios = [a / b for a, b in zip(wholes["this"], wholes["other"], strict=True)]
    print(f"this/other, whole machine per event: median {statistics.median(ratios):.3f} "
          f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})")  # fmt: skip
    return 0


async def hub_process_phase(
    repo: Path, bootstrap: str, pg: Any, ns: str, max_records: int, probe: Callable[[], dict[str, float]]
) -> dict[str, float]:
    """One hub process of ``repo`` from the start of the topics on a fresh database and group:
    CPU µs per event of the hub process, PostgreSQL and the broker (and its JIT, a part of it),
    from the moment its group has joined to its last commit, per event."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    env = base_env(
        ZT_DATABASE_URL=pg.create_database(f"bench_hub_{uuid.uuid4().hex[:8]}"), ZT_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        ZT_KAFKA_TOPIC_PREFIX=ns, ZT_DATAHUB_GROUP_ID=group, ZT_LOG_LEVEL="WARNING", ZT_DATAHUB_MODEL_PATH="",
        ZT_DATAHUB_MAX_RECORDS=str(max_records), ZT_DATABASE_POOL_SIZE="5", ZT_GRPC_PORT=str(stack.free_port()),
        PYTHONPATH=str(repo),
    )  # fmt: skip
    if _component(repo, env, "migrate", "data_hub").wait() != 0:  # (a few seconds: nothing else runs)
        raise RuntimeError(f"the migrations of {repo} failed")
    async with CommitWatcher(bootstrap, {ns + group: tuple(ns + t for t in TOPICS)}) as watcher:
        hub = _component(repo, env, "data_hub")
        try:
            deadline = time.monotonic() + 600

            def alive() -> None:
                if hub.poll() is not None:
                    raise RuntimeError(f"the hub of {repo} exited ({hub.returncode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the hub of {repo} did not commit every offset in 600 s")

            committed, joined = await _until_committed(watcher, lambda: cpu_seconds(hub.pid), probe, alive)
            if joined is None:
                raise RuntimeError("the group was done before it was seen joined")
            return _per_event(joined, committed, cpu_seconds(hub.pid), probe())
        finally:
            hub.terminate()
            hub.wait(30)


#: What a phase marks when its group has joined: the hub's CPU seconds and the servers' then.
Mark = tuple[float, dict[str, float]]


async def _until_committed(
    watcher: CommitWatcher,
    cpu: Callable[[], float],
    probe: Callable[[], dict[str, float]],
    alive: Callable[[], None],
    *,
    mark_join: bool = True,
) -> tuple[int, Mark | None]:
    """Wait until every group has committed every offset (``alive()`` raises when the hub died or
    took too long); the events the first group committed, and (``mark_join``) the hub's CPU
    (``cpu()``) and the servers' (``probe()``) when the group was first seen joined."""
    joined: Mark | None = None
    while True:
        alive()
        if mark_join and joined is None and await watcher.joined():
            joined = (cpu(), probe())
        done, committed = await watcher.progress()
        if done:
            return committed, joined
        # (every 10 ms while the join is awaited, to mark it closely)
        await asyncio.sleep(0.01 if mark_join and joined is None else 0.1)


def _per_event(since: Mark, events: int, cpu: float, servers: dict[str, float]) -> dict[str, float]:
    """CPU µs per event of the hub (``cpu``: its CPU seconds now) and of each server (their CPU
    seconds now), from ``since`` over ``events`` events."""
    return {"hub": (cpu - since[0]) / events * 1e6, **{k: (v - since[1][k]) / events * 1e6 for k, v in servers.items()}}


def _checkout(path: str) -> Path:
    return Path(path).resolve()


def _component(repo: Path, env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    """``python -m services.cli <command>`` of the checkout ``repo``."""
    return subprocess.Popen([sys.executable, "-m", "services.cli", *command], env=env, cwd=repo,
                            stdout=subprocess.DEVNULL)  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument(
        "--max-records",
        type=int,
        default=DataHubSettings.model_fields["datahub_max_records"].default,
        help="hub batch size (ZT_DATAHUB_MAX_RECORDS; default: the hub's own)",
    )
    parser.add_argument(
        "--hubs",
        type=int,
        default=1,
        help="hub processes in the consumer group: this one plus N-1 `python -m services.cli data_hub` (max 3: "
        "3 partitions per topic)",
    )
    parser.add_argument(
        "--compare-model",
        metavar="ARTIFACT",
        default="",
        help="instead: hub runs without and with this trained-scores artifact (ZT_DATAHUB_MODEL_PATH), alternating, "
        "on the same events; prints the hub's CPU per event until every view is rendered, and the ratio",
    )
    parser.add_argument(
        "--compare-repo",
        metavar="CHECKOUT",
        type=_checkout,
        default=None,
        help="instead: this checkout's hub against that checkout's, each a process of its own checkout, phases "
        "alternating on the same broker, PostgreSQL and events; prints each side's whole machine per event and "
        "the ratio",
    )
    parser.add_argument(
        "--pairs", type=int, default=3, help="with --compare-model or --compare-repo: alternating pairs of runs"
    )
    parser.add_argument(
        "--warm",
        type=int,
        default=6,
        help="before the figures, at most this many hub phases (left out) until the broker's JIT compilers are quiet "
        "(ADR 0066; 0: measure a freshly started broker)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="before each hub phase, the floor cells on the same events (ADR 0068): decode only; and the transaction "
        "rows; and the event feed's rows — the whole machine's CPU per event of each beside the hub's",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="hub phases on the same broker (each a fresh database and group): the first after the broker's start "
        "also pays its JVM's warm-up",
    )
    args = parser.parse_args()
    kafka = stack.kafka_for_tests()
    pg = stack.postgres_for_tests()
    kafka.start()
    pg.start()
    try:
        bootstrap = kafka.bootstrap_servers
        url = pg.create_database(f"bench_hub_{uuid.uuid4().hex[:8]}")
        ns = f"ingest{uuid.uuid4().hex[:8]}."  # this run's topic namespace (ZT_KAFKA_TOPIC_PREFIX)
        await ensure_topics(bootstrap, partitions=3, prefix=ns)
        synth = Synth(seed=2024, customers=args.customers, months=args.months, prefix=f"b{uuid.uuid4().hex[:4]}")
        records = [dataclasses.replace(r, topic=ns + r.topic) for r in synth.records()]
        took = await produce(records, bootstrap, client_id="bench-producer")
        print(f"produced {len(records)} events in {took:.1f}s ({len(records) / took:,.0f}/s)")
        probe = functools.partial(servers_cpu, kafka, pg)
        await warm_broker(args, pg, bootstrap, ns, probe)
        if args.compare_model:
            return await compare_model(args, bootstrap, pg, ns, len(records))
        if args.compare_repo:
            return await compare_repo(args, bootstrap, pg, ns, len(records), probe)
        raw_servers = probe()
        total, raw_s, raw_cpu_s = await raw_rate(bootstrap, ns)
        raw_kafka_s = probe()["Kafka"] - raw_servers["Kafka"]
        for run in range(1, args.repeat + 1):
            if run > 1:
                url = pg.create_database(f"bench_hub_{uuid.uuid4().hex[:8]}")
                print(f"--- hub phase {run} of {args.repeat} (same broker, a fresh database and group)")
            floors = await floor_cells(pg, bootstrap, ns, total, probe, args.max_records) if args.floor else {}
            raw_figures = (raw_s, raw_cpu_s, raw_kafka_s)
            hub_us = await one_hub_phase(args, kafka, pg, bootstrap, url, ns, total, *raw_figures, probe)
            for cell, parts in floors.items():
                whole = sum(parts.values())
                print(
                    f"floor {cell}: "
                    + " + ".join(f"{k} {v:.0f}" for k, v in parts.items())
                    + f" = {whole:.0f} µs/event; the hub's whole machine {hub_us:.0f} = {hub_us / whole:.2f} x"
                )
    finally:
        pg.stop()
        kafka.stop()
    return 0


async def warm_broker(
    args: argparse.Namespace, pg: Any, bootstrap: str, ns: str, probe: Callable[[], dict[str, float]]
) -> None:
    """Hub phases left out of the figures (each on a fresh database and group) until the broker's
    JIT compilers used at most :data:`~tests.support.procs.JIT_QUIET_SHARE` of a core during the last one (at most
    ``--warm``): a freshly started broker spent 20 µs an event in the first hub phase, 13 of them
    compiling, and 8 in the third (ADR 0066)."""
    for n in range(1, args.warm + 1):
        before, started = probe()[JIT], time.perf_counter()
        if before != before:  # NaN: not our broker, nothing to watch
            return
        url = pg.create_database(f"bench_hub_{uuid.uuid4().hex[:8]}")
        await hub_rate(bootstrap, url, args.max_records, ns)
        share = (probe()[JIT] - before) / (time.perf_counter() - started)
        print(f"warm-up hub phase {n} (left out): the broker's JIT compilers used {share:.1%} of a core", flush=True)
        if share <= JIT_QUIET_SHARE:
            return


async def floor_cells(
    pg: Any, bootstrap: str, ns: str, total: int, probe: Callable[[], dict[str, float]], max_records: int
) -> dict[str, dict[str, float]]:
    """Each of :data:`FLOOR_CELLS` once, on a fresh database, with the hub's young GC threshold:
    the whole machine's CPU per event (this process, PostgreSQL, the broker)."""
    out = {}
    # (with the hub's own collector setting, as its lifecycle sets it: ADR 0069; a checkout before
    # it has none)
    young = DataHubSettings.model_fields.get("gc_young_threshold")
    thresholds = gc.get_threshold()
    for cell in FLOOR_CELLS:
        url = pg.create_database(f"bench_floor_{uuid.uuid4().hex[:8]}")
        before = probe()
        if young is not None:
            gc.set_threshold(young.default, *thresholds[1:])
        try:
            _, cpu_s = await floor_rate(bootstrap, url, ns, cell, total, max_records)
        finally:
            gc.set_threshold(*thresholds)
        after = probe()
        out[cell] = {
            "consumer": cpu_s / total * 1e6,
            **{k: (after[k] - before[k]) / total * 1e6 for k in ("PostgreSQL", "Kafka") if after[k] == after[k]},
        }
    return out


async def one_hub_phase(
    args: argparse.Namespace,
    kafka: Any,
    pg: Any,
    bootstrap: str,
    url: str,
    ns: str,
    total: int,
    raw_s: float,
    raw_cpu_s: float,
    raw_kafka_s: float,
    probe: Callable[[], dict[str, float]],
) -> float:
    """One hub phase on its own database and group, and its figures beside the raw phase's;
    returns the whole machine's CPU per event (µs)."""
    steady: dict[str, float] = {}
    consumed_s, rendered_s, views, cpu_s, servers_s = await hub_rate(
        bootstrap, url, args.max_records, ns, args.hubs, probe, steady=steady
    )
    raw = total / raw_s
    hub = total / consumed_s
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
        f"Kafka {kafka.version}; {pg.description.split(',')[0]}"
    )
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "")
    sampling = f"{sampler} {os.environ.get('OTEL_TRACES_SAMPLER_ARG', '')}".strip() or "every trace (unset)"
    print(
        f"events in the topics: {total}; hub processes: {args.hubs}; batch: {args.max_records}; "
        f"trace sampling: {sampling}"
    )
    print(f"raw aiokafka consume: {raw:,.0f} events/s ({raw_s:.2f}s)")
    print(f"hub ingest (the groups' offsets committed after DB commits): {hub:,.0f} events/s ({consumed_s:.2f}s)")
    print(
        f"hub CPU until committed ({args.hubs} process{'es' if args.hubs > 1 else ''}): {cpu_s:.2f}s = "
        f"{cpu_s / total * 1e6:.0f} µs/event ({cpu_s / consumed_s:.0%} of one core; the rest is waiting: "
        "PostgreSQL, the broker, other processes)"
    )
    # The whole machine's CPU per event in each phase: what two cores allow at best.
    jit_us = servers_s.pop(JIT, float("nan")) / total * 1e6
    hub_us = {"hub": cpu_s / total * 1e6, **{k: v / total * 1e6 for k, v in servers_s.items()}}
    raw_us = {"consumer": raw_cpu_s / total * 1e6, "Kafka": raw_kafka_s / total * 1e6}
    cores = os.cpu_count() or 1
    for phase, parts in (("raw consume", raw_us), ("hub ingest", hub_us)):
        whole = sum(v for v in parts.values() if v == v)
        print(
            f"CPU per event, {phase}: "
            + " + ".join(f"{k} {v:.0f}" for k, v in parts.items())
            + f" = {whole:.0f} µs; {cores} cores at most {cores * 1e6 / whole:,.0f} events/s"
            + (" (target for the hub phase, the whole machine: <= 45 µs)" if phase == "hub ingest" else "")
        )
    print(f"of the broker's CPU in the hub phase, its JIT compilers (the JVM's warm-up): {jit_us:.0f} µs/event")
    if steady:  # (one hub process: its group was seen joining)
        events, steady_jit = int(steady.pop("events")), steady.pop(JIT)
        print(
            "CPU per event, hub ingest from the group's join to its last commit (no start-up; "
            f"{events} events): "
            + " + ".join(f"{k} {v:.0f}" for k, v in steady.items())
            + f" = {sum(steady.values()):.0f} µs (of the broker's, its JIT {steady_jit:.0f})"
        )
    print(f"hub incl. every view rendered: {total / rendered_s:,.0f} events/s ({rendered_s:.2f}s, {views} views)")
    print(f"ratio hub/raw: {hub / raw:.2f}  (targets: >= 10,000 events/s, ratio >= 0.5)")
    return sum(v for v in hub_us.values() if v == v)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
