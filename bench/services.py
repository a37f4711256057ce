"""Benchmark: the business services against the ceilings of their own runtime (not a test).

    .venv/bin/python -m bench.services [--rounds 3] [--duration 5] [--concurrency 32]
                                       [--cells A,B,...] [--statements] [--profile CELL]

Starts Apache Kafka and PostgreSQL (devtools.stack), the customer, product and data hub services
as real processes (``python -m services.cli ...``, access logs on as in production, the outbox
relays inside them), and the ceiling cells of ``bench/_cells.py`` (each its own process):

- ``A`` bare grpc.aio from memory; ``B`` the kit's server from memory, and ``B-nolog``,
  ``B-notrace``, ``B-noauth`` with one part off (the access log, spans, token + validation);
- ``C-read`` bare grpc.aio + one asyncpg primary-key SELECT; ``C-write`` bare grpc.aio + an
  asyncpg transaction of 4 statements (SELECT FOR UPDATE, UPDATE RETURNING, 2 INSERT);
- every business RPC: GetCustomer (masked), GetCustomerView, CheckEligibility, ListCustomers,
  ListTransactions, CreateCustomer, UpdateCustomer, PostTransaction, CreateSubscription.

ghz (built once from the Go module proxy into ~/.cache/zhongtai/bin, devtools/ghz.py) drives
each cell closed-loop with ``--concurrency`` workers over one connection for ``--duration``
seconds after a 1 s warm-up; the cells take turns, round after round. Before the first round,
passes of the write cells (left out) warm the freshly started broker up until its JIT compilers
are quiet (``--warm-broker``). Around each measured run
it reads /proc/<pid>/stat of every process: CPU µs per OK request of the serving process(es),
PostgreSQL (per database, from its backends' titles; ``pg`` = the whole server), Kafka, the
data hub (which applies every write's events as they arrive) and ghz itself.

Printed: one line per cell and round, the medians per cell, then for each RPC
``ratio <Rpc> rps=<x> cpu=<y> (vs <ceiling>)``: its req/s over the ceiling's (reads: C-read;
writes: C-write; the kit: A) and its services' CPU per request over the ceiling's server CPU.
``--statements`` adds pg_stat_statements per request (calls and the top statements);
``--profile CELL`` adds a py-spy profile of that cell's serving process (top frames).

The machine is shared: trust ratios and CPU per request within one run, not absolute req/s.
Results: docs/PERFORMANCE.md, findings: docs/perf/services.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2

from bank.customer.v1 import customer_pb2
from bank.datahub.v1 import datahub_pb2
from bank.product.v1 import product_pb2
from bench import _cells
from bench.product import cny, national_id, setup
from devtools.ghz import ghz_binary
from devtools.stack import KafkaServer, PostgresServer, free_port
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from tests.support.procs import JIT_QUIET_SHARE, REPO, ServiceProcess, cpu_seconds, jit_cpu_seconds

CUSTOMER = "bank.customer.v1.CustomerService"
BASE = "@base"  # the suffix of the baseline's processes and cells (--baseline)
PRODUCT = "bank.product.v1.ProductService"
VIEWS = "bank.datahub.v1.CustomerViewService"
TICK = os.sysconf("SC_CLK_TCK")
#: CreateSubscription's own customers (see seed()): a pass of that cell (~2,000 requests) adds ~2
#: holdings to each, so after the warm-up passes and three rounds each holds ~15-20, not ~250.
SUBSCRIBERS = 1024
#: PostTransaction's accounts: 32 at a time (as C-write's), a set of their own for each pass of
#: the cell (see seed()), so that every pass posts to accounts with the same short history.
POSTING_ACCOUNTS = 32


def posting_pass(r: int) -> int:
    """The pass a cell's ``data(r)`` is for: a measured round ``k`` (``r`` = k, and 100 + k for
    its warm-up), or a broker warm-up pass ``n`` (200 + n and 300 + n): 100 + n."""
    return r % 100 + (100 if r >= 200 else 0)


@dataclass
class Cell:
    name: str
    call: str  # package.Service.Method
    serving: tuple[str, ...]  # the processes whose CPU is "the service's"
    data: Callable[[int], Any]  # round → JSON data (an object, or an array ghz takes in turn)
    ceiling: str = ""  # the cell it is compared with
    rpc: str = ""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    errors: dict[str, int]
    cpu_us: dict[str, float] = field(default_factory=dict)  # process → CPU µs per OK request
    statements: dict[str, float] = field(default_factory=dict)


# -------------------------------------------------------------------------- processes' CPU --


def _stat(pid: int) -> tuple[int, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields


def pg_cpu(postmaster: int) -> dict[str, float]:
    """CPU seconds of PostgreSQL: ``pg`` (the server: postmaster, its helpers, live backends and
    the exited ones it reaped) and ``pg:<database>|<pid>`` per live backend (by its process
    title); :func:`pg_deltas` turns the latter into per-database figures."""
    out: dict[str, float] = {"pg": 0.0}
    root = _stat(postmaster)
    if root is None:
        return out
    out["pg"] = (int(root[1][11]) + int(root[1][12]) + int(root[1][13]) + int(root[1][14])) / TICK
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        got = _stat(int(entry.name))
        if got is None or got[0] != postmaster:
            continue
        seconds = (int(got[1][11]) + int(got[1][12])) / TICK
        out["pg"] += seconds
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").split()
        except OSError:
            continue
        if len(title) >= 3 and title[0] == "postgres:" and title[2].startswith("bench_"):
            out[f"pg:{title[2].removeprefix('bench_')}|{entry.name}"] = seconds
    return out


def pg_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per database between two reads: the backends alive at the second read (one
    that started in between counts from zero). A backend that exited in between (an overflow
    connection closed by the pool) is lost here, so a database's figure is a lower bound; the
    whole server's ``pg`` counts it (the postmaster reaps it)."""
    out: dict[str, float] = {}
    for key, seconds in after.items():
        if "|" in key:
            db = key.split("|", 1)[0]
            out[db] = out.get(db, 0.0) + seconds - before.get(key, 0.0)
    return out


class Meter:
    """CPU seconds of every process of the run, read together."""

    def __init__(self, pids: dict[str, int], postmaster: int, kafka: int) -> None:
        self.pids = pids
        self.postmaster = postmaster
        self.kafka = kafka

    def read(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out["kafka"] = cpu_seconds(self.kafka)
        out.update(pg_cpu(self.postmaster))
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ghz, once it has been waited for
        out["ghz"] = usage.ru_utime + usage.ru_stime
        return out


# ----------------------------------------------------------------------------------- ghz ---


def protoset(path: Path) -> Path:
    """A FileDescriptorSet of the services' contracts (and everything they import) for ghz."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd: Any) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        out.file.append(proto)

    for module in (customer_pb2, product_pb2, datahub_pb2):
        add(module.DESCRIPTOR)
    path.write_bytes(out.SerializeToString())
    return path


def run_ghz(ghz: Path, protos: Path, cell: Cell, target: str, data: Any, args: argparse.Namespace, seconds: float,
            token: str, workdir: Path) -> dict[str, Any]:  # fmt: skip
    data_file = workdir / f"data-{cell.name}.json"
    data_file.write_text(json.dumps(data, ensure_ascii=False))
    proc = subprocess.run(
        [
            str(ghz), "--insecure", "--protoset", str(protos), "--call", cell.call,
            "-c", str(args.concurrency), "--connections", "1", "-z", f"{seconds}s", "--timeout", "10s",
            "--data-file", str(data_file), "-m", json.dumps({"authorization": f"Bearer {token}"}),
            "-O", "json", target,
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0 and not proc.stdout:
        raise RuntimeError(f"ghz failed on {cell.name}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def summarize(report: dict[str, Any], concurrency: int) -> Result:
    codes = report.get("statusCodeDistribution") or {}
    ok = int(codes.get("OK", 0))
    seconds = report["total"] / 1e9
    percentiles = {int(p["percentage"]): p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    errors = {k: int(v) for k, v in codes.items() if k != "OK"}
    # ghz ends a timed run by closing the connection: the calls in flight then (at most one per
    # worker) come back UNAVAILABLE. They are not the service's errors.
    cut = min(errors.get("Unavailable", 0), concurrency)
    if cut:
        errors["Unavailable"] -= cut
        if not errors["Unavailable"]:
            del errors["Unavailable"]
    return Result(ok / seconds, percentiles.get(50, float("nan")), percentiles.get(99, float("nan")), ok, errors)


# ----------------------------------------------------------------------------------- cells --


def person(n: int) -> dict[str, Any]:
    born = date(1960, 1, 1).toordinal() + n % 15000
    birth = date.fromordinal(born)
    return {
        "fullName": "李四",
        "birthDate": {"year": birth.year, "month": birth.month, "day": birth.day},
        "nationalId": national_id(birth, n // 15000),
        "mobile": f"139{n % 100_000_000:08d}",
        "email": f"li.{n}@example.com",
    }


def cells(ids: dict[str, Any], run_salt: int) -> list[Cell]:
    customers, accounts, product_id = ids["customers"], ids["accounts"], ids["product"]
    per_round = 8_000  # more than any cell's requests in one run

    def pick(i: int) -> str:
        return customers[i % len(customers)]  # type: ignore[no-any-return]

    uuid_id = "bench-{{newUUID}}"
    return [
        Cell("A", f"{CUSTOMER}.GetCustomer", ("A",), lambda r: [{"customerId": c} for c in ids["cell_customers"]]),
        Cell("B", f"{CUSTOMER}.GetCustomer", ("B",), lambda r: [{"customerId": c} for c in customers], "A", "Kit"),
        Cell(
            "B-nolog",
            f"{CUSTOMER}.GetCustomer",
            ("B-nolog",),
            lambda r: [{"customerId": c} for c in customers],
            "A",
            "Kit-nolog",
        ),
        Cell(
            "B-notrace",
            f"{CUSTOMER}.GetCustomer",
            ("B-notrace",),
            lambda r: [{"customerId": c} for c in customers],
            "A",
            "Kit-notrace",
        ),
        Cell(
            "B-noauth",
            f"{CUSTOMER}.GetCustomer",
            ("B-noauth",),
            lambda r: [{"customerId": c} for c in customers],
            "A",
            "Kit-noauth",
        ),
        Cell(
            "C-read",
            f"{CUSTOMER}.GetCustomer",
            ("C-read",),
            lambda r: [{"customerId": c} for c in ids["cell_customers"]],
        ),
        Cell(
            "C-write",
            f"{PRODUCT}.PostTransaction",
            ("C-write",),
            lambda r: [
                {
                    "customerId": f"cell-{i}",
                    "subscriptionId": f"acct-{i}",
                    "transaction": {"direction": "DIRECTION_CREDIT", "amount": {"currencyCode": "CNY", "units": "1"}},
                    "requestId": uuid_id,
                }
                for i in range(_cells.ACCOUNTS)
            ],
        ),
        Cell(
            "GetCustomer",
            f"{CUSTOMER}.GetCustomer",
            ("customer",),
            lambda r: [{"customerId": c} for c in customers],
            "C-read",
        ),
        Cell(
            "GetCustomerView",
            f"{VIEWS}.GetCustomerView",
            ("data_hub",),
            lambda r: [{"customerId": c} for c in customers],
            "C-read",
        ),
        Cell(
            "CheckEligibility",
            f"{PRODUCT}.CheckEligibility",
            ("product", "customer"),
            lambda r: [
                {"productId": product_id, "customerId": c, "amount": {"currencyCode": "CNY", "units": "100"}}
                for c in customers
            ],
            "C-read",
        ),
        Cell("ListCustomers", f"{CUSTOMER}.ListCustomers", ("customer",), lambda r: {"pageSize": 20}, "C-read"),
        Cell(
            "ListTransactions",
            f"{PRODUCT}.ListTransactions",
            ("product",),
            lambda r: [{"customerId": c, "subscriptionId": s, "pageSize": 20} for c, s in accounts],
            "C-read",
        ),
        Cell(
            "CreateCustomer",
            f"{CUSTOMER}.CreateCustomer",
            ("customer",),
            lambda r: [
                {"customer": person(run_salt + r * per_round + i), "requestId": uuid_id} for i in range(per_round)
            ],
            "C-write",
        ),
        Cell(
            "UpdateCustomer",
            f"{CUSTOMER}.UpdateCustomer",
            ("customer",),
            lambda r: [
                {
                    "customer": {"customerId": pick(i), "mobile": f"137{(r * 1000 + i) % 100_000_000:08d}"},
                    "updateMask": {"paths": ["mobile"]},
                    "requestId": uuid_id,
                }
                for i in range(len(customers))
            ],
            "C-write",
        ),
        Cell(
            "PostTransaction",
            f"{PRODUCT}.PostTransaction",
            ("product",),
            lambda r: [
                {
                    "customerId": c,
                    "subscriptionId": s,
                    "transaction": {"direction": "DIRECTION_CREDIT", "amount": {"currencyCode": "CNY", "units": "1"}},
                    "requestId": uuid_id,
                }
                for c, s in ids["posting_sets"][posting_pass(r)]
            ],
            "C-write",
        ),
        Cell(
            "CreateSubscription",
            f"{PRODUCT}.CreateSubscription",
            ("product", "customer"),
            lambda r: [
                {
                    "customerId": c,
                    "subscription": {"productId": product_id, "amount": {"currencyCode": "CNY", "units": "100"}},
                    "requestId": uuid_id,
                }
                for c in ids["subscribers"]
            ],
            "C-write",
        ),
    ]


def baseline_twin(cell: Cell, ids: dict[str, Any]) -> Cell:
    """The same cell on the baseline's stack (its own processes, databases and seeded ids)."""
    twin = cells(ids, run_salt=2_000_000)
    own = next(c for c in twin if c.name == cell.name)
    return Cell(cell.name + BASE, own.call, tuple(p + BASE for p in own.serving), own.data, own.ceiling,
                (own.rpc or own.name) + BASE)  # fmt: skip


DEFAULT_CELLS = (
    "A,B,B-nolog,B-notrace,B-noauth,C-read,C-write,GetCustomer,GetCustomerView,CheckEligibility,ListCustomers,ListTransactions,"
    "CreateCustomer,UpdateCustomer,PostTransaction,CreateSubscription"
)

# -------------------------------------------------------------------------- the platform ---


class _Proc(ServiceProcess):
    """A service process run from a given checkout (``--baseline``: the code before a change)."""

    def __init__(self, component: str, *, env: dict[str, str], log_dir: Path, repo: Path) -> None:
        super().__init__(component, env=env, log_dir=log_dir)
        self.repo = repo
        self.log_path = log_dir / f"{component}-{self.port}.log"

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", self.component],
            cwd=self.repo, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.wait_ready(timeout)
        return self


class Platform:
    """Kafka, PostgreSQL, the three services (twice with ``--baseline``) and the ceiling cells."""

    def __init__(self, kafka: KafkaServer, pg: PostgresServer, logs: Path, kit_cells: list[str],
                 baseline: Path | None = None, hub_models: tuple[Path | None, Path | None] = (None, None),
                 ) -> None:  # fmt: skip
        self.kafka, self.pg, self.logs = kafka, pg, logs
        # Each stack's hub's trained scores (as `make run` and the chart deploy them); None: the rules.
        self.hub_env = [{"ZT_DATAHUB_MODEL_PATH": str(m.resolve())} if m else {} for m in hub_models]
        self.procs: dict[str, ServiceProcess] = {}
        self.cell_procs: dict[str, subprocess.Popen[bytes]] = {}
        self.targets: dict[str, str] = {}
        self.kit_cells = kit_cells
        self.baseline = baseline

    def start(self, statements: bool) -> None:
        if statements:  # the extension must be preloaded: restart the server with it
            self.pg.halt("fast")
            self.pg.resume(settings={"shared_preload_libraries": "pg_stat_statements"})
        common = {"ZT_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers, "ZT_LOG_LEVEL": "INFO"}
        keys = {
            "ZT_PII_KEY": base64.b64encode(os.urandom(32)).decode(),
            "ZT_PII_KEY_ID": "bench",
            "ZT_BLIND_INDEX_KEY": base64.b64encode(os.urandom(32)).decode(),
        }
        self.cells_dsn = self.pg.create_database("bench_cells").replace("postgresql+asyncpg", "postgresql")
        asyncio.run(_cells.create_schema(self.cells_dsn))
        self._services(REPO, "", common, keys)
        cells = [(kind, REPO, kind) for kind in ["A", *self.kit_cells, "C-read", "C-write"]]
        if self.baseline is not None:
            # The baseline's own topic namespace: its hub must not apply the other stack's events.
            self._services(self.baseline, BASE, {**common, "ZT_KAFKA_TOPIC_PREFIX": "base."}, keys)
            cells += [(kind, self.baseline, kind + BASE) for kind in self.kit_cells]
        for kind, repo, name in cells:
            port = free_port()
            log = (self.logs / f"cell-{name}.log").open("ab")
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            self.cell_procs[name] = subprocess.Popen(
                [sys.executable, "-m", "bench._cells", kind, str(port), self.cells_dsn],
                cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            self.targets[name] = f"127.0.0.1:{port}"
        for kind, target in self.targets.items():
            asyncio.run(_wait_serving(target, kind))

    def _services(self, repo: Path, suffix: str, common: dict[str, str], keys: dict[str, str]) -> None:
        db = suffix.replace("@", "_")
        hub_db = self.pg.create_database(f"bench_hub{db}")
        hub = _Proc("data_hub", env={**common, **self.hub_env[bool(suffix)], "ZT_DATABASE_URL": hub_db},
                    log_dir=self.logs, repo=repo).start()  # fmt: skip
        customer = _Proc(
            "customer", env={**common, **keys, "ZT_DATABASE_URL": self.pg.create_database(f"bench_customer{db}")},
            log_dir=self.logs, repo=repo,
        ).start()  # fmt: skip
        product = _Proc(
            "product", env={**common, "ZT_DATABASE_URL": self.pg.create_database(f"bench_product{db}"),
                            "ZT_CUSTOMER_TARGET": customer.target}, log_dir=self.logs, repo=repo,
        ).start()  # fmt: skip
        for name, proc in (("customer", customer), ("product", product), ("data_hub", hub)):
            self.procs[name + suffix] = proc
            self.targets[name + suffix] = proc.target

    def pids(self) -> dict[str, int]:
        out = {name: p.proc.pid for name, p in self.procs.items() if p.proc is not None}
        out.update({kind: p.pid for kind, p in self.cell_procs.items()})
        return out

    def stop(self) -> None:
        for p in self.cell_procs.values():
            p.terminate()
        for p in self.cell_procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for name in sorted(self.procs, reverse=True):  # (product, data_hub, customer)
            self.procs[name].stop()


async def _wait_serving(target: str, kind: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        while True:
            try:
                await asyncio.wait_for(channel.channel_ready(), 1)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} at {target} not serving after {timeout}s") from None


async def seed(
    platform: Platform,
    auth: tuple[tuple[str, str], ...],
    customers: int,
    suffix: str = "",
    passes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A published deposit product, ``customers`` verified customers, one subscription each for
    the first 32 (ListTransactions' accounts), :data:`SUBSCRIBERS` verified customers of their own
    for CreateSubscription, and for each of PostTransaction's ``passes`` (:func:`posting_pass`)
    :data:`POSTING_ACCOUNTS` verified customers with an account each; waits until the hub has a
    view of each.

    PostTransaction once posted to the first 32 accounts pass after pass: ~700 postings each by
    the last round, all inside the views' activity windows, which the hub re-sums at every render
    (docs/perf/services.md, "Wave 18"). The cell's figure then depended on how many passes had
    run before it, not only on the code: the hub's PostgreSQL went from ~670 to ~2,150 µs a
    posting within one run, and the product service's CPU per request with it. A set of accounts
    per pass gives every pass accounts with the same history (~80 postings each by its end).

    Every subscription CreateSubscription creates is a holding more in its customer's view. On the
    read cells' customers, the views GetCustomerView reads (and the holdings CheckEligibility
    sees) grew with every pass of that cell, ~2,000 holdings a pass over 64 customers, so each
    round measured bigger views than the one before (GetCustomerView's load generator alone went
    from ~300 to ~1,300 µs a request). Its own subscribers keep the read cells' customers as
    seeded, and their number keeps its own customers near a bank's (~2 holdings more a pass)."""
    from bank.customer.v1 import customer_pb2_grpc
    from bank.datahub.v1 import datahub_pb2_grpc

    accounts = await setup(platform.targets["product" + suffix], platform.targets["customer" + suffix], 32, auth)
    gate = asyncio.Semaphore(16)
    async with grpc.aio.insecure_channel(platform.targets["customer" + suffix]) as cch:
        stub = customer_pb2_grpc.CustomerServiceStub(cch)

        async def verified(n: int) -> str:
            async with gate:
                request = customer_pb2.CreateCustomerRequest(customer=_proto_person(14_000_000 + n))
                created = await stub.CreateCustomer(request, metadata=auth, timeout=10)
                await stub.VerifyCustomer(
                    customer_pb2.VerifyCustomerRequest(
                        customer_id=created.customer_id, outcome=customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED
                    ),
                    metadata=auth,
                    timeout=10,
                )
                return created.customer_id  # type: ignore[no-any-return]

        ids = [c for c, _ in accounts] + list(await asyncio.gather(*(verified(n) for n in range(32, customers))))
        first = max(customers, 32)
        subscribers = list(await asyncio.gather(*(verified(first + n) for n in range(SUBSCRIBERS))))
        holders = list(await asyncio.gather(*(verified(14_500_000 + n)
                                              for n in range(POSTING_ACCOUNTS * len(passes)))))  # fmt: skip
    async with grpc.aio.insecure_channel(platform.targets["product" + suffix]) as pch:
        products = __import__("bank.product.v1.product_pb2_grpc", fromlist=["x"]).ProductServiceStub(pch)
        listed = await products.ListProducts(product_pb2.ListProductsRequest(), metadata=auth, timeout=10)

        async def account(cid: str) -> tuple[str, str]:
            async with gate:
                request = product_pb2.CreateSubscriptionRequest(
                    customer_id=cid,
                    subscription=product_pb2.Subscription(
                        product_id=listed.products[0].product_id,
                        amount=cny(100),
                    ),
                )
                sub = await products.CreateSubscription(request, metadata=auth, timeout=10)
                return cid, sub.subscription_id

        opened = list(await asyncio.gather(*(account(cid) for cid in holders)))
    posting_sets = {p: opened[i * POSTING_ACCOUNTS : (i + 1) * POSTING_ACCOUNTS] for i, p in enumerate(passes)}
    async with grpc.aio.insecure_channel(platform.targets["data_hub" + suffix]) as hch:
        views = datahub_pb2_grpc.CustomerViewServiceStub(hch)
        for cid in ids + subscribers + holders:
            for _ in range(300):
                try:
                    await views.GetCustomerView(datahub_pb2.GetCustomerViewRequest(customer_id=cid), metadata=auth,
                                                timeout=5)  # fmt: skip
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
    return {
        "customers": ids,
        "subscribers": subscribers,
        "accounts": accounts,
        "posting_sets": posting_sets,
        "product": listed.products[0].product_id,
        "cell_customers": [f"cell-{i}" for i in range(_cells.ACCOUNTS)],
    }


def _proto_person(n: int) -> customer_pb2.Customer:
    from google.protobuf import json_format

    return json_format.ParseDict(person(n), customer_pb2.Customer())


# ------------------------------------------------------------------------------ statements --


async def _statements(dsn: str, reset: bool) -> list[tuple[str, str, int]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if reset:
            await conn.execute("SELECT pg_stat_statements_reset()")
            return []
        rows = await conn.fetch(
            "SELECT d.datname, s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname LIKE 'bench_%' ORDER BY s.calls DESC"
        )
        return [(r[0], r[1], int(r[2])) for r in rows]
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------ run ---


def measure(platform: Platform, meter: Meter, ghz: Path, protos: Path, cell: Cell, data: Any, warm: Any,
            args: argparse.Namespace, token: str, workdir: Path) -> Result:  # fmt: skip
    target = platform.targets[cell.serving[0]]
    run_ghz(ghz, protos, cell, target, warm, args, args.warmup, token, workdir)
    if args.statements:
        asyncio.run(_statements(platform.cells_dsn, reset=True))
    before = meter.read()
    report = run_ghz(ghz, protos, cell, target, data, args, args.duration, token, workdir)
    after = meter.read()
    result = summarize(report, args.concurrency)
    n = max(result.ok, 1)
    result.cpu_us = {k: (after[k] - before.get(k, 0.0)) / n * 1e6 for k in after if "|" not in k}
    result.cpu_us.update({k: v / n * 1e6 for k, v in pg_deltas(before, after).items()})
    if args.statements:
        for db, query, calls in asyncio.run(_statements(platform.cells_dsn, reset=False)):
            key = db.removeprefix("bench_")
            result.statements[key] = result.statements.get(key, 0.0) + calls / n
            result.statements[f"{key}|{query[:110]}"] = calls / n
    return result


def warm_broker(platform: Platform, meter: Meter, ghz: Path, protos: Path, chosen: list[Cell], kafka_pid: int,
                args: argparse.Namespace, token: str, workdir: Path) -> None:  # fmt: skip
    """Passes of the write cells, left out, until the broker's JIT compilers used at most
    :data:`~tests.support.procs.JIT_QUIET_SHARE` of a core during the last one (at most
    ``--warm-broker``). A freshly started broker spends a fifth to a third of a core compiling
    its hot paths during its first minutes of writes, and more CPU per event while its code is
    not compiled yet (bench/freshness.py, the same finding): a broker in service has long done
    that, and the first round would otherwise measure it."""
    writes = [c for c in chosen if c.ceiling == "C-write"]
    for n in range(1, args.warm_broker + 1 if writes and kafka_pid else 1):
        jit, started = jit_cpu_seconds(kafka_pid), time.perf_counter()
        for cell in writes:
            measure(platform, meter, ghz, protos, cell, cell.data(200 + n), cell.data(300 + n), args, token, workdir)
        share = (jit_cpu_seconds(kafka_pid) - jit) / (time.perf_counter() - started)
        print(f"broker warm-up {n}: {', '.join(c.name for c in writes)} (left out); its JIT compilers used "
              f"{share:.1%} of a core", flush=True)  # fmt: skip
        if not share > JIT_QUIET_SHARE:
            break


def serving_cpu(cell: Cell, result: Result) -> float:
    return sum(result.cpu_us.get(p, float("nan")) for p in cell.serving)


def format_line(cell: Cell, r: Result) -> str:
    parts = [f"{cell.name:<18} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.1f}  p99 {r.p99_ms:6.1f} ms"]
    parts.append("cpu µs/req " + " ".join(f"{p}={r.cpu_us.get(p, 0):.0f}" for p in cell.serving))
    parts.append(" ".join(f"{k}={r.cpu_us.get(k, 0):.0f}" for k in _extra_keys(cell, r)))
    if r.errors:
        parts.append(f"errors={r.errors}")
    return "  ".join(parts)


def _extra_keys(cell: Cell, r: Result) -> list[str]:
    keys = [k for k in sorted(r.cpu_us) if k.startswith("pg") and r.cpu_us[k] >= 0.5]
    hub = "data_hub" + (BASE if cell.name.endswith(BASE) else "")
    keys += [k for k in (hub, "kafka", "ghz") if k not in cell.serving]
    return keys


def median_result(results: list[Result]) -> Result:
    keys = set().union(*(r.cpu_us for r in results))
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.ok for r in results),
        errors,
        {k: statistics.median(r.cpu_us.get(k, 0.0) for r in results) for k in keys},
        {
            k: statistics.median(r.statements.get(k, 0.0) for r in results)
            for k in set().union(*(r.statements for r in results))
        },
    )


def report(chosen: list[Cell], medians: dict[str, Result]) -> None:
    print("\nmedians over the rounds (CPU µs per OK request; pg = the whole PostgreSQL server)")
    for cell in chosen:
        print("  " + format_line(cell, medians[cell.name]))
    print()
    for cell in chosen:
        if not cell.ceiling or cell.ceiling not in medians:
            continue
        mine, base = medians[cell.name], medians[cell.ceiling]
        base_cpu = serving_cpu(next(c for c in chosen if c.name == cell.ceiling), base)
        print(
            f"ratio {cell.rpc or cell.name} rps={mine.rps / base.rps:.2f} cpu={serving_cpu(cell, mine) / base_cpu:.2f}"
            f" (vs {cell.ceiling})"
        )
    for suffix in ("", BASE):
        name, db, hub = "PostTransaction" + suffix, "pg:product" + suffix.replace("@", "_"), "data_hub" + suffix
        if "C-write" in medians and name in medians:
            mine, floor = medians[name].cpu_us.get(db, 0), medians["C-write"].cpu_us.get("pg:cells", 0)
            print(f"postgres {name} {db}={mine:.0f} µs/req vs C-write pg:cells={floor:.0f} "
                  f"(ratio {mine / max(floor, 1e-9):.2f})")  # fmt: skip
        for write in ("CreateCustomer", "UpdateCustomer", "PostTransaction", "CreateSubscription"):
            if write + suffix in medians:
                r = medians[write + suffix]
                print(f"data hub live {write + suffix}: {r.cpu_us.get(hub, 0):.0f} µs/write, "
                      f"kafka {r.cpu_us.get('kafka', 0):.0f} µs/write")  # fmt: skip
        for write in ("CreateCustomer", "UpdateCustomer"):  # (their events feed the product's replica, ADR 0054)
            if write + suffix in medians:
                r, db = medians[write + suffix], "pg:product" + suffix.replace("@", "_")
                print(f"product replica live {write + suffix}: {r.cpu_us.get('product' + suffix, 0):.0f} µs/write, "
                      f"{db} {r.cpu_us.get(db, 0):.0f} µs/write")  # fmt: skip


def print_statements(chosen: list[Cell], medians: dict[str, Result]) -> None:
    print("\nstatements per request (pg_stat_statements, median over rounds)")
    for cell in chosen:
        st = medians[cell.name].statements
        totals = {k: v for k, v in st.items() if "|" not in k and v >= 0.01}
        print(f"  {cell.name}: " + " ".join(f"{k}={v:.2f}" for k, v in sorted(totals.items())))
        for key, value in sorted(((k, v) for k, v in st.items() if "|" in k), key=lambda kv: -kv[1])[:14]:
            if value >= 0.05:
                db, query = key.split("|", 1)
                print(f"      {value:5.2f} {db:<9} {' '.join(query.split())}")


def profile(platform: Platform, cell: Cell, data: Any, ghz: Path, protos: Path, args: argparse.Namespace,
            token: str, workdir: Path) -> None:  # fmt: skip
    """py-spy (pinned in constraints.txt) on the cell's serving process while ghz drives it."""
    pid = platform.pids()[cell.serving[0]]
    out = workdir / f"profile-{cell.name}.txt"
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--duration",
         str(int(args.duration) + 1), "--format", "raw", "--nonblocking", "--rate", "250", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    run_ghz(ghz, protos, cell, platform.targets[cell.serving[0]], data, args, args.duration, token, workdir)
    spy.wait(60)
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"\npy-spy {cell.name} ({cell.serving[0]}, {total} samples; raw stacks: {out})")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  self {n / total * 100:5.1f}%  incl {inclusive[name] / total * 100:5.1f}%  {name}")


def _pairs(chosen: list[Cell], *, flip: bool) -> list[list[Cell]]:
    out: list[list[Cell]] = []
    for cell in chosen:
        if cell.name.endswith(BASE) and out:
            out[-1] = [cell, *out[-1]] if flip else [*out[-1], cell]
        else:
            out.append([cell])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--warm-broker", type=int, default=6, help="before the rounds, at most this many "
                        "passes of the write cells (left out) until the broker's JIT is quiet (0: none)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--customers", type=int, default=64)
    parser.add_argument("--cells", default=DEFAULT_CELLS, help="comma-separated cell names")
    parser.add_argument("--statements", action="store_true", help="pg_stat_statements per request")
    parser.add_argument("--profile", default="", help="a cell to profile with py-spy after the rounds")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before a change: its services "
                        "and kit cells run beside these, each cell's twin '<cell>@base' in turn with it")  # fmt: skip
    parser.add_argument("--hub-model", type=Path, help="the data hubs load this trained-scores artifact (e.g. "
                        "models/scores.json, as `make run` and the chart do); default none: the rules")  # fmt: skip
    parser.add_argument("--baseline-hub-model", type=Path, help="the same for the baseline's hub (with "
                        "--baseline <this checkout>: the rules against a model, side by side)")  # fmt: skip
    args = parser.parse_args()

    ghz = ghz_binary()
    workdir = Path(tempfile.mkdtemp(prefix="zt-bench-services-"))
    protos = protoset(workdir / "services.protoset")
    # No pii:read: reads are masked (an unmasked read also appends to the audit chain).
    token = mint_token(DEV_SECRET, [s for s in ALL_SCOPES if s != "pii:read"], client_id="bench", ttl_s=7200)
    auth = (("authorization", f"Bearer {token}"),)
    wanted = args.cells.split(",")
    kit_cells = [c for c in wanted if c.startswith("B")]
    with KafkaServer() as kafka, PostgresServer() as pg:
        platform = Platform(kafka, pg, workdir, kit_cells, args.baseline, (args.hub_model, args.baseline_hub_model))
        try:
            platform.start(args.statements)
            # PostTransaction's passes: the measured rounds (and --profile's), the broker's warm-ups
            passes = (*range(args.rounds + 1), *(100 + n for n in range(1, args.warm_broker + 1)))
            ids = asyncio.run(seed(platform, auth, args.customers, passes=passes))
            all_cells = {c.name: c for c in cells(ids, run_salt=1_000_000)}
            chosen = [all_cells[name] for name in wanted]
            if args.baseline is not None:
                base_ids = asyncio.run(seed(platform, auth, args.customers, BASE, passes))
                chosen = [c for cell in chosen for c in
                          ([cell, baseline_twin(cell, base_ids)] if cell.ceiling or cell.name.startswith("B") else [cell])]  # fmt: skip  # noqa: E501
            meter = Meter(platform.pids(), pg.pid or 0, kafka.pid or 0)
            print(f"PostgreSQL {pg.version}, Kafka {kafka.version}, ghz {ghz}; c={args.concurrency}, "
                  f"{args.duration:.0f}s per cell after {args.warmup:.0f}s warm-up, {args.rounds} rounds; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
            before = meter.read()
            time.sleep(3)
            now = meter.read()
            idle = {k: (v - before.get(k, 0.0)) / 3 * 100 for k, v in now.items() if "|" not in k}
            idle.update({k: v / 3 * 100 for k, v in pg_deltas(before, now).items()})
            print("idle CPU %: " + " ".join(f"{k}={v:.1f}" for k, v in sorted(idle.items()) if v >= 0.1))
            warm_broker(platform, meter, ghz, protos, chosen, kafka.pid or 0, args, token, workdir)
            results: dict[str, list[Result]] = {c.name: [] for c in chosen}
            for round_ in range(args.rounds):
                # (a cell and its baseline twin swap places every round)
                order = [c for pair in _pairs(chosen, flip=round_ % 2 == 1) for c in pair]
                for cell in order:
                    r = measure(
                        platform,
                        meter,
                        ghz,
                        protos,
                        cell,
                        cell.data(round_),
                        cell.data(100 + round_),
                        args,
                        token,
                        workdir,
                    )
                    results[cell.name].append(r)
                    print(f"[{round_ + 1}] " + format_line(cell, r), flush=True)
            if args.rounds:
                medians = {name: median_result(rs) for name, rs in results.items()}
                report(chosen, medians)
                if args.statements:
                    print_statements(chosen, medians)
            if args.profile:
                cell = all_cells[args.profile]
                profile(platform, cell, cell.data(args.rounds), ghz, protos, args, token, workdir)
            print(f"\nload average at the end {os.getloadavg()[0]:.1f}; logs and data files: {workdir}")
        finally:
            platform.stop()


if __name__ == "__main__":
    main()
