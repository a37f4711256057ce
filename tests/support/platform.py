"""The whole platform as real processes for end-to-end tests: customer, product, data_hub and
the gateway (``python -m services.cli <name>``) on free ports, each with its own PostgreSQL
database on the session's cluster, all on the session's Apache Kafka.

    with running_platform(kafka_server, postgres_server, log_dir) as platform:
        httpx.get(platform.url + "/healthz")
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devtools import stack
from tests.support.procs import ServiceProcess

COMPONENTS = ("customer", "product", "data_hub")


@dataclass
class Platform:
    gateway: ServiceProcess
    processes: dict[str, ServiceProcess]
    databases: dict[str, str] = field(default_factory=dict)  # component → its database URL

    @property
    def url(self) -> str:
        return f"http://{self.gateway.target}"


@contextlib.contextmanager
def running_platform(
    kafka: stack.KafkaLike,
    postgres: stack.PostgresLike,
    log_dir: Path,
    *,
    common: Mapping[str, str] | None = None,
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Platform]:
    """Start the four components (``common`` env for all, ``extra[name]`` for one), stop them
    and drop their databases afterwards."""
    suffix = uuid.uuid4().hex[:8]
    dbs = {name: postgres.create_database(f"e2e_{name}_{suffix}") for name in COMPONENTS}
    env = {"ZT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, **(common or {})}
    more = extra or {}
    started: list[ServiceProcess] = []

    def start(name: str, timeout: float, **own: str) -> ServiceProcess:
        proc = ServiceProcess(name, env={**env, **own, **more.get(name, {})}, log_dir=log_dir)
        started.append(proc.start(timeout))
        return proc

    try:
        customer = start("customer", 120, ZT_DATABASE_URL=dbs["customer"])
        # (its eligibility replica's group is this platform's own, like the hub's: ADR 0054)
        product = start("product", 120, ZT_DATABASE_URL=dbs["product"], ZT_CUSTOMER_TARGET=customer.target,
                        ZT_PRODUCT_REPLICA_GROUP_ID=f"e2e-product-{suffix}")  # fmt: skip
        # a view miss asks the customer service whether the customer exists (ADR 0008)
        hub = start("data_hub", 120, ZT_DATABASE_URL=dbs["data_hub"], ZT_DATAHUB_GROUP_ID=f"e2e-{suffix}",
                    ZT_CUSTOMER_TARGET=customer.target)  # fmt: skip
        gateway = start("gateway", 60, ZT_CUSTOMER_TARGET=customer.target, ZT_PRODUCT_TARGET=product.target,
                        ZT_DATAHUB_TARGET=hub.target)  # fmt: skip
        yield Platform(gateway, {p.component: p for p in started}, dbs)
    finally:
        for proc in reversed(started):
            proc.stop(15)
        for name in dbs:
            try:
                postgres.drop_database(f"e2e_{name}_{suffix}")
            except Exception as exc:  # the cluster is throw-away; never mask the test's outcome
                print(f"could not drop e2e database {name}: {exc}")
