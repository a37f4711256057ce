"""``make chaos``: faults injected into real processes under a channel workload, one at a time.

The platform, all real processes on this machine: PostgreSQL (fsync, full-page writes and
synchronous commit ON: an immediate restart must not lose an acknowledged commit), Apache
Kafka, redis-server (the gateways' shared quotas), toxiproxy (a TCP fault proxy between the
product service and PostgreSQL, and between the data hub and PostgreSQL), two replicas of each
gRPC service (customer, product, data hub; clients round-robin over an ``ipv4:`` address list)
and two gateways (shared Idempotency-Key records in PostgreSQL, shared quotas in Redis).

Each scenario runs the bounded workload of :mod:`devtools.chaos_workload` through both gateways,
injects one fault, stops the load, then checks the invariants (ARCHITECTURE §8, 6-7):

- no HTTP 500 anywhere, and (the targets) no request failed for good after the client's retries;
- every acknowledged customer, subscription and posting exists exactly once, and every balance
  is its opening amount plus the acknowledged credits minus debits;
- ``zhongtai reconcile`` is clean: every committed event is on Kafka, the views agree with the
  ledger (the time it takes is the view convergence time).

Usage: ``python -m devtools.chaos [--scenario NAME ...] [--load-s S]``; ``--list`` names them.
Results and the command are in docs/RESILIENCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools import stack
from devtools.chaos_workload import Client, Ledger, Stats, Workload, create_product
from devtools.run import healthy
from devtools.toxiproxy import Toxiproxy
from services.cli import DEV_SECRET
from services.data_hub.config import TOPICS as HUB_TOPICS
from services.kit import GroupProbe, group_reached
from services.reconcile import Sources, reconcile_until_clean

REPLICAS = 2
SERVICES = ("customer", "product", "data_hub")


@dataclass
class Proc:
    """One component replica in its own process, on a fixed port (restarts reuse it)."""

    name: str
    component: str
    port: int
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def health(self) -> str:
        return f"http://{self.address}/readyz" if self.component == "gateway" else f"grpc://{self.address}"

    def start(self) -> None:
        with open(self.log_dir / f"{self.name}.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", self.component],
                cwd=stack.REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=stack._die_with_parent(signal.SIGTERM),
            )

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Seconds until its health says SERVING (the gateway: /readyz 200)."""
        started = time.monotonic()
        while not healthy(self.health):
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_dir / (self.name + '.log')}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s")
            time.sleep(0.1)
        return time.monotonic() - started

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        stack._stop_process_group(proc, signal.SIGKILL, grace=5.0)

    def terminate(self, grace: float = 15.0) -> None:
        """SIGTERM: the process drains and exits (SIGKILL after ``grace``)."""
        proc, self.proc = self.proc, None
        stack._stop_process_group(proc, signal.SIGTERM, grace=grace)


@dataclass
class Platform:
    """Everything running; ``procs["product-1"]`` etc."""

    log_dir: Path
    pg: stack.PostgresServer
    kafka: stack.KafkaServer
    redis: stack.RedisServer
    toxi: Toxiproxy
    urls: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    #: service → its Kafka bootstrap address, through its own toxiproxy proxy
    kafka_links: dict[str, str] = field(default_factory=dict)

    @property
    def gateways(self) -> list[str]:
        return [f"http://{p.address}" for p in self.procs.values() if p.component == "gateway"]

    def replicas(self, component: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.component == component]

    def sources(self) -> Sources:
        return Sources(
            product_db=self.urls["product"],
            hub_db=self.urls["data_hub"],
            customer_db=self.urls["customer"],
            kafka=self.kafka.bootstrap_servers,
        )

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.terminate(grace=5.0)
        self.toxi.stop()
        self.redis.stop()
        self.kafka.stop()
        self.pg.stop()


def _base_env(bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZT_")}
    env.update(
        ZT_ENVIRONMENT="dev",
        ZT_AUTH_HS256_SECRET=DEV_SECRET,
        ZT_LOG_LEVEL="WARNING",
        ZT_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        ZT_OUTBOX_POLL_INTERVAL_S="0.2",
        ZT_GRPC_SHUTDOWN_GRACE_S="5",
        PYTHONUNBUFFERED="1",
    )
    return env


def _via_proxy(url: str, port: int) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(port=port).render_as_string(hide_password=False)


def _kafka_listener(service: str) -> str:
    return service.upper()


def start_platform(log: Callable[[str], None] = print) -> Platform:
    log_dir = Path(tempfile.mkdtemp(prefix="zt-chaos-"))
    pg = stack.PostgresServer(durable=True)
    # One broker listener per service, advertised on the port of that service's toxiproxy proxy:
    # the service bootstraps through the proxy and is told to connect there again, so every
    # connection it makes to the broker crosses the proxy (latency, resets, partitions).
    kafka = stack.KafkaServer(
        start_timeout=180.0,  # (a JVM start on a loaded 2-core machine: 20-75 s)
        extra_listeners={_kafka_listener(s): (stack.free_port(), stack.free_port()) for s in SERVICES},
    )
    redis = stack.RedisServer()
    toxi = Toxiproxy()
    platform = Platform(log_dir, pg, kafka, redis, toxi, {})
    try:
        _start_infrastructure(platform, log)
        _start_components(platform, log)
    except BaseException:
        platform.stop()
        raise
    return platform


def _start_infrastructure(platform: Platform, log: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    platform.pg.start()
    platform.toxi.start(platform.log_dir)
    for service in SERVICES:
        listen, advertised = platform.kafka.extra_listeners[_kafka_listener(service)]
        platform.toxi.proxy(f"{service}-kafka", f"127.0.0.1:{listen}", port=advertised)
        platform.kafka_links[service] = f"127.0.0.1:{advertised}"
    platform.kafka.start()
    platform.redis.start()
    for name in (*SERVICES, "gateway"):
        platform.urls[name] = platform.pg.create_database(f"chaos_{name}")
    log(
        f"infrastructure up in {time.monotonic() - t0:.1f} s: PostgreSQL {platform.pg.version} (fsync on), "
        f"Kafka {platform.kafka.version}, {platform.redis.description}, toxiproxy; logs in {platform.log_dir}"
    )


def _start_components(platform: Platform, log: Callable[[str], None]) -> None:
    pg_address = f"127.0.0.1:{platform.pg.port}"
    db = dict(platform.urls)
    for name in ("product", "data_hub"):  # these reach PostgreSQL through the fault proxy
        db[name] = _via_proxy(db[name], platform.toxi.proxy(f"{name}-pg", pg_address))
    ports = {f"{c}-{i}": stack.free_port() for c in (*SERVICES, "gateway") for i in range(1, REPLICAS + 1)}
    targets = {
        c: "ipv4:" + ",".join(f"127.0.0.1:{ports[f'{c}-{i}']}" for i in range(1, REPLICAS + 1)) for c in SERVICES
    }
    env = _base_env(platform.kafka.bootstrap_servers)
    env.update(ZT_CUSTOMER_TARGET=targets["customer"], ZT_PRODUCT_TARGET=targets["product"])
    env.update(ZT_DATAHUB_TARGET=targets["data_hub"])
    extra: dict[str, dict[str, str]] = {
        "data_hub": {"ZT_DATAHUB_SESSION_TIMEOUT_MS": "6000"},
        "gateway": {
            "ZT_IDEMPOTENCY_STORE": "database",
            "ZT_QUOTA_REDIS_URL": platform.redis.url,
            "ZT_QUOTA_READS_RPS": "100000",
            "ZT_QUOTA_READS_BURST": "100000",
            "ZT_QUOTA_WRITES_RPS": "100000",
            "ZT_QUOTA_WRITES_BURST": "100000",
            "ZT_QUOTA_ADMIN_RPS": "1000",
        },
    }
    for component in (*SERVICES, "gateway"):
        for i in range(1, REPLICAS + 1):
            name = f"{component}-{i}"
            own = {**env, **extra.get(component, {}), "ZT_DATABASE_URL": db[component]}
            if component in platform.kafka_links:
                own["ZT_KAFKA_BOOTSTRAP_SERVERS"] = platform.kafka_links[component]
            own["ZT_HTTP_PORT" if component == "gateway" else "ZT_GRPC_PORT"] = str(ports[name])
            platform.procs[name] = Proc(name, component, ports[name], own, platform.log_dir)
    for i in range(1, REPLICAS + 1):  # replica 1 of each first (it migrates), then the others
        replicas = [platform.procs[f"{c}-{i}"] for c in (*SERVICES, "gateway")]
        for proc in replicas:
            proc.start()
            if proc.component in ("customer", "gateway"):  # the others call the customer service
                proc.wait_ready()
        for proc in replicas:
            proc.wait_ready()
    log(f"components up: {', '.join(platform.procs)}")


# ------------------------------------------------------------------------------------------------- faults


@dataclass
class Marks:
    """When the fault began and when the faulty part was back (monotonic)."""

    fault_at: float = 0.0
    restored_at: float | None = None
    #: a replica killed while it held writes (frozen with SIGSTOP first)
    killed_at: float | None = None
    load_stopped_at: float = 0.0
    #: seconds from ``restored_at`` until the hubs' group had applied what was published before it
    hub_caught_up_s: float | None = None
    notes: list[str] = field(default_factory=list)


Fault = Callable[[Platform, Marks], None]


def kill_replica(component: str, down_s: float = 3.0, *, frozen_s: float = 0.0) -> Fault:
    """SIGKILL one replica, restart it ``down_s`` later. With ``frozen_s``, SIGSTOP it that long
    first: the calls routed to it hang (its sockets still accept), so writes are in flight on it
    when it is killed (``Marks.killed_at``)."""

    def fault(platform: Platform, marks: Marks) -> None:
        victim = platform.replicas(component)[0]
        if frozen_s:
            assert victim.proc is not None
            os.killpg(victim.proc.pid, signal.SIGSTOP)
            time.sleep(frozen_s)
            marks.killed_at = time.monotonic()
        victim.kill()
        time.sleep(down_s)
        marks.restored_at = time.monotonic()
        victim.start()
        marks.notes.append(f"{victim.name} ready {victim.wait_ready():.1f} s after its restart")

    return fault


def kafka_unreachable(down_s: float = 15.0) -> Fault:
    """Every service's link to the broker cut for ``down_s`` (the broker runs on): Kafka down,
    as its clients see it, for exactly that long."""

    def fault(platform: Platform, marks: Marks) -> None:
        for service in SERVICES:
            platform.toxi.enable(f"{service}-kafka", False)
        time.sleep(down_s)
        for service in SERVICES:
            platform.toxi.enable(f"{service}-kafka", True)
        marks.restored_at = time.monotonic()

    return fault


def rolling_restart(platform: Platform, marks: Marks) -> None:
    for component in (*SERVICES, "gateway"):
        for proc in platform.replicas(component):
            t0 = time.monotonic()
            proc.terminate()
            proc.start()
            proc.wait_ready()
            marks.notes.append(f"{proc.name} {time.monotonic() - t0:.1f} s")
    marks.restored_at = time.monotonic()


def kafka_down(down_s: float = 15.0) -> Fault:
    def fault(platform: Platform, marks: Marks) -> None:
        platform.kafka.kill()
        time.sleep(down_s)
        platform.kafka.start()
        marks.restored_at = time.monotonic()

    return fault


def postgres_down(mode: str, down_s: float = 0.0) -> Fault:
    def fault(platform: Platform, marks: Marks) -> None:
        platform.pg.halt(mode)
        time.sleep(down_s)
        platform.pg.resume()  # returns once it accepts connections
        marks.restored_at = time.monotonic()

    return fault


def partition(proxy: str, down_s: float = 10.0) -> Fault:
    def fault(platform: Platform, marks: Marks) -> None:
        platform.toxi.enable(proxy, False)
        time.sleep(down_s)
        platform.toxi.enable(proxy, True)
        marks.restored_at = time.monotonic()

    return fault


def toxic(proxy: str, kind: str, attributes: dict[str, Any], for_s: float = 5.0) -> Fault:
    def fault(platform: Platform, marks: Marks) -> None:
        platform.toxi.add_toxic(proxy, "chaos", kind, attributes)
        time.sleep(for_s)
        platform.toxi.remove_toxic(proxy, "chaos")
        marks.restored_at = time.monotonic()

    return fault


def link_faults(service: str, peer: str, *kinds: str) -> dict[str, tuple[str, Fault]]:
    """Scenarios on one service's link to PostgreSQL (``pg``) or Kafka (``kafka``), through its
    toxiproxy proxy: +200 ms latency for 5 s, every connection reset for 2 s, a 10 s partition."""
    proxy, slug = f"{service}-{peer}", f"{service.replace('_', '-')}-{peer}"
    link = f"{service.replace('_', ' ')} ↔ {'PostgreSQL' if peer == 'pg' else 'Kafka'}"
    every = {
        "latency": (f"{slug}-latency", f"{link}: +200 ms latency for 5 s",
                    toxic(proxy, "latency", {"latency": 200, "jitter": 50})),
        "reset": (f"{slug}-reset", f"{link}: every connection reset for 2 s",
                  toxic(proxy, "reset_peer", {"timeout": 0}, for_s=2.0)),
        "partition": (f"{slug}-partition-10s", f"{link}: partition for 10 s", partition(proxy)),
    }  # fmt: skip
    return {name: (description, fault) for name, description, fault in (every[k] for k in kinds)}


SCENARIOS: dict[str, tuple[str, Fault]] = {
    "kill-customer": ("SIGKILL one customer replica, restart it 3 s later", kill_replica("customer")),
    "kill-product": ("SIGKILL one product replica (writes in flight), restart 3 s later", kill_replica("product")),
    "kill-data-hub": ("SIGKILL one data hub replica mid-batch, restart 3 s later", kill_replica("data_hub")),
    "kill-gateway": ("SIGKILL one gateway replica, restart 3 s later", kill_replica("gateway")),
    "rolling-restart": ("SIGTERM, restart, ready, next: every replica of every component", rolling_restart),
    "kill-product-write-in-flight": (
        "SIGSTOP one product replica (writes hang on it), SIGKILL it 2 s later, restart 3 s after",
        kill_replica("product", frozen_s=2.0),
    ),
    "kafka-down-15s": ("SIGKILL the Kafka broker, start it again 15 s later", kafka_down()),
    "kafka-unreachable-15s": ("every service ↔ Kafka link cut for 15 s (the broker runs on)", kafka_unreachable()),
    **link_faults("product", "kafka", "latency", "partition"),
    **link_faults("data_hub", "kafka", "reset", "partition"),
    "postgres-immediate-restart": ("pg_ctl stop -m immediate, start at once", postgres_down("immediate")),
    "postgres-down-10s": ("PostgreSQL stopped (fast) for 10 s", postgres_down("fast", 10.0)),
    **link_faults("product", "pg", "latency", "reset", "partition"),
    **link_faults("data_hub", "pg", "partition"),
}
#: Scenarios whose fault stops views from being built (no events flow while the broker is down):
#: a view read of a customer created meanwhile may exhaust the client's retries; writes may not.
VIEWS_WAIT_FOR_THE_FAULT = {"kafka-down-15s", "kafka-unreachable-15s", "data-hub-kafka-partition-10s"}
#: The short run in `make test` (tests/integration/chaos).
SHORT = ("kill-product-write-in-flight", "kill-gateway", "postgres-immediate-restart")


# ------------------------------------------------------------------------------------------------- checks


@dataclass
class Result:
    name: str
    description: str
    stats: Stats
    marks: Marks
    convergence_s: float
    violations: list[str]
    reconcile: list[str]
    figures: dict[str, int]
    ledger: Ledger

    @property
    def passed(self) -> bool:
        return not self.violations and not self.reconcile

    @property
    def met(self) -> bool:
        """Invariants hold and nothing failed for good (view reads excepted where the fault
        itself keeps views from being built)."""
        reads_may_wait = self.name in VIEWS_WAIT_FOR_THE_FAULT
        failed = self.stats.writes_failed_for_good if reads_may_wait else self.stats.failed_for_good
        if self.marks.killed_at is not None:  # it proves something only with writes in flight, all acknowledged
            spans = self.stats.writes_in_flight(self.marks.killed_at)
            if not spans or not all(a.ok or any(b.ok for b in later) for a, later in spans):
                return False
        return self.passed and not failed

    def lines(self) -> list[str]:
        s, m = self.stats, self.marks
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items()))
        back = s.first_success_after(m.restored_at) if m.restored_at is not None else None
        lines = [
            f"== {self.name}: {self.description}",
            f"   requests {s.requests} ({s.operations} operations; {statuses})",
            f"   failed for good after retries: {len(s.failed_for_good)}"
            f" ({len(s.writes_failed_for_good)} not view reads); "
            f"HTTP 500: {s.statuses.get('500', 0)}; write attempts refused or unanswered: "
            + (", ".join(f"{k}: {v}" for k, v in sorted(s.write_refusals.items())) or "0"),
            f"   fault -> first success: {_secs(s.first_success_after(m.fault_at))}; last failed attempt at "
            f"+{_secs(s.last_failure_s(m.fault_at))}; the faulty part was back after "
            f"{((m.restored_at or m.fault_at) - m.fault_at):.1f} s, first success after that: {_secs(back)}",
            f"   view convergence after the load stopped: {self.convergence_s:.1f} s"
            + (
                f" ({m.load_stopped_at + self.convergence_s - m.restored_at:.1f} s after the faulty part was back)"
                if m.restored_at is not None
                else ""
            ),
            *(
                [
                    f"   the hubs' group applied what was published before the fault ended: {_secs(m.hub_caught_up_s)}"
                    " after it ended"
                ]
                if m.restored_at is not None
                else []
            ),
            f"   acknowledged: {len(self.ledger.customers)} customers, {len(self.ledger.subscriptions)} subscriptions,"
            f" {len(self.ledger.postings)} postings; eligibility checked right after the approval:"
            f" {self.ledger.checked_after_approval} (refused {len(self.ledger.refused_after_approval)}); reconciled: "
            + ", ".join(f"{k} {v}" for k, v in self.figures.items()),
        ]
        lines += [f"   note: {n}" for n in m.notes]
        if m.killed_at is not None:
            lines.append(f"   {in_flight_line(s, m.killed_at)}")
        lines += [f"   FAILED FOR GOOD: {f}" for f in s.failed_for_good[:10]]
        lines += [f"   VIOLATION: {v}" for v in self.violations]
        lines += [f"   RECONCILE: {d}" for d in self.reconcile[:20]]
        lines.append(f"   invariants: {'hold' if self.passed else 'VIOLATED'}")
        return lines


def in_flight_line(stats: Stats, moment: float) -> str:
    """What became of the writes in flight on the replica at the instant it was killed."""
    spans = stats.writes_in_flight(moment)
    answered = sum(1 for a, _later in spans if a.ok)
    retried = [(a, later) for a, later in spans if not a.ok]
    recovered = sum(1 for _a, later in retried if any(b.ok for b in later))
    return (
        f"writes in flight at the kill: {len(spans)}; answered 200 on that attempt (the gateway retried"
        f" on the other replica): {answered}; failed ({', '.join(sorted({a.status for a, _ in retried})) or '-'})"
        f" then retried by the client with the same Idempotency-Key: {len(retried)}, of which succeeded:"
        f" {recovered}"
    )


def _secs(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f} s"


async def check_acknowledged(platform: Platform, ledger: Ledger, stats: Stats) -> list[str]:
    """Every acknowledged write exists exactly once; balances = opening + acknowledged postings;
    no HTTP 500."""
    violations = []
    if stats.statuses.get("500"):
        violations.append(f"{stats.statuses['500']} HTTP 500 responses")
    product = create_async_engine(platform.urls["product"])
    customers = create_async_engine(platform.urls["customer"])
    mine = set(ledger.subscriptions)  # this scenario's subscriptions (earlier ones are in the tables too)
    try:
        async with product.connect() as conn:
            subs = {
                r[0]: int(r[1])
                for r in await conn.execute(text("SELECT subscription_id, balance_minor FROM subscriptions"))
                if r[0] in mine
            }
            txns = [
                r[0]
                for r in await conn.execute(text("SELECT transaction_id, subscription_id FROM transactions"))
                if r[1] in mine
            ]
        async with customers.connect() as conn:
            known = {r[0] for r in await conn.execute(text("SELECT customer_id FROM customers"))}
    finally:
        await product.dispose()
        await customers.dispose()
    violations += [f"acknowledged customer {c} is missing" for c in sorted(ledger.customers - known)]
    violations += [f"acknowledged subscription {s} is missing" for s in sorted(set(ledger.subscriptions) - set(subs))]
    counted: dict[str, int] = {}
    for txn in txns:
        counted[txn] = counted.get(txn, 0) + 1
    violations += [f"acknowledged posting {t} is missing" for t in sorted(set(ledger.postings) - set(counted))]
    violations += [f"posting {t} stored {n} times" for t, n in counted.items() if n > 1]
    unknown_outcome = len(stats.failed_for_good)  # a write that failed for good may have been applied
    extra = len(txns) - len(ledger.postings)
    if extra > unknown_outcome:
        violations.append(f"{extra} postings stored beyond the acknowledged ones (retries applied twice?)")
    if not unknown_outcome:
        for sub, expected in ledger.expected_balances().items():
            if sub in subs and subs[sub] != expected:
                violations.append(f"subscription {sub} balance {subs[sub]} != acknowledged {expected}")
    return violations


#: What a consumer says in its log when it restarts itself (services/kit/consumer.py, progress.py).
CONSUMER_RESTARTS = ("consumer group stalled", "consumer task died")


def _log_ends(platform: Platform) -> dict[str, int]:
    logs = {name: platform.log_dir / f"{name}.log" for name, p in platform.procs.items() if p.component == "data_hub"}
    return {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}


def consumer_restarts(platform: Platform, since: dict[str, int]) -> list[str]:
    """The hubs' consumer restarts logged since ``since`` (a stall is never silent: it shows here)."""
    notes = []
    for name, offset in since.items():
        with open(platform.log_dir / f"{name}.log", "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        for what in CONSUMER_RESTARTS:
            if count := text.count(what):
                notes.append(f"{name}: {what} ×{count} (its consumer restarted itself)")
    return notes


#: The data hubs' consumer group (services/data_hub/config.py, no topic prefix here).
HUB_GROUP = "data-hub"


async def hub_caught_up(bootstrap: str, since: float, timeout_s: float = 90.0) -> float | None:
    """Seconds from ``since`` until the hubs' group has committed every record its topics held
    at ``since`` (the backlog a fault held back, applied); None if not within ``timeout_s``. Read
    straight from the broker, not through the hubs' proxies."""
    probe = GroupProbe(bootstrap, HUB_GROUP, HUB_TOPICS, timeout_s=5.0)
    target: dict[Any, int] | None = None
    try:
        while time.monotonic() - since < timeout_s:
            try:
                committed, ends, starts = await probe.read()
            except Exception:  # (the broker itself may be what the fault took away)
                await asyncio.sleep(0.2)
                continue
            target = target if target is not None else ends
            if group_reached(committed, starts, target):
                return time.monotonic() - since
            await asyncio.sleep(0.1)
        return None
    finally:
        await probe.close()


async def _hub_caught_up_once_restored(bootstrap: str, marks: Marks) -> float | None:
    while marks.restored_at is None:
        await asyncio.sleep(0.05)
    return await hub_caught_up(bootstrap, marks.restored_at)


async def run_scenario(platform: Platform, name: str, product_id: str, *, load_s: float) -> Result:
    description, fault = SCENARIOS[name]
    logs_at = _log_ends(platform)
    client = Client(platform.gateways)
    workload = Workload(client, product_id)
    stop = asyncio.Event()
    load = asyncio.create_task(workload.run(stop))
    marks = Marks()
    try:
        await asyncio.sleep(min(3.0, load_s / 3))
        marks.fault_at = time.monotonic()
        # (watched from the moment the faulty part is back, while the fault's thread still waits
        # for a restarted replica to be ready: that wait is not the hubs')
        caught_up = asyncio.create_task(_hub_caught_up_once_restored(platform.kafka.bootstrap_servers, marks))
        try:
            await asyncio.to_thread(fault, platform, marks)
        finally:
            if marks.restored_at is None:
                caught_up.cancel()
        await asyncio.sleep(max(3.0, load_s - (time.monotonic() - marks.fault_at)))
    finally:
        stop.set()
        await load
        marks.load_stopped_at = time.monotonic()
        await client.close()
    report, convergence = await reconcile_until_clean(platform.sources(), wait_s=60.0)
    if marks.restored_at is not None:
        marks.hub_caught_up_s = await caught_up
    else:
        await asyncio.gather(caught_up, return_exceptions=True)
    violations = await check_acknowledged(platform, workload.ledger, client.stats)
    violations += [f"refused right after the approval: {r}" for r in workload.ledger.refused_after_approval]
    marks.notes += consumer_restarts(platform, logs_at)
    return Result(
        name,
        description,
        client.stats,
        marks,
        convergence,
        violations,
        report.differences,
        report.figures,
        workload.ledger,
    )


async def run(names: list[str], *, load_s: float, log: Callable[[str], None] = print) -> list[Result]:
    platform = await asyncio.to_thread(start_platform, log)
    results = []
    try:
        setup = Client(platform.gateways)
        product_id = await create_product(setup)
        await setup.close()
        for name in names:
            result = await run_scenario(platform, name, product_id, load_s=load_s)
            for line in result.lines():
                log(line)
            results.append(result)
    finally:
        await asyncio.to_thread(platform.stop)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all, in order")
    parser.add_argument("--short", action="store_true", help=f"the short run of make test: {', '.join(SHORT)}")
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds of load per scenario (default 20)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for name, (description, _f) in SCENARIOS.items():
            print(f"{name:28} {description}")
        return 0
    names = args.scenario or (list(SHORT) if args.short else list(SCENARIOS))
    started = time.monotonic()
    results = asyncio.run(run(names, load_s=args.load_s, log=lambda line: print(line, flush=True)))
    failed = [r.name for r in results if not r.met]
    print(
        f"== {len(results)} scenarios in {time.monotonic() - started:.0f} s; "
        + (f"not met: {', '.join(failed)}" if failed else "every invariant held, nothing failed for good")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
