"""The whole platform for the end-to-end tests, started once per session and shared by the
modules: customer, product, data_hub and gateway as ``python -m services.cli <name>`` processes
on free ports, with a real Apache Kafka (``kafka_server``) and one PostgreSQL database per service
(``postgres_server``). Spans go to each process's stdout (``ZT_OTEL_CONSOLE``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devtools import stack
from tests.support.procs import ServiceProcess


@dataclass
class Platform:
    gateway: ServiceProcess
    processes: dict[str, ServiceProcess]

    @property
    def url(self) -> str:
        return f"http://{self.gateway.target}"


@pytest.fixture(scope="session")
def platform(
    kafka_server: stack.KafkaLike, postgres_server: stack.PostgresLike, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    suffix = uuid.uuid4().hex[:8]
    dbs = {
        name: postgres_server.create_database(f"e2e_{name}_{suffix}") for name in ("customer", "product", "data_hub")
    }
    common = {
        "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka_server.bootstrap_servers,
        "ZT_OTEL_CONSOLE": "true",
        "ZT_OUTBOX_POLL_INTERVAL_S": "0.2",
    }
    started: list[ServiceProcess] = []
    try:
        customer = ServiceProcess("customer", env={**common, "ZT_DATABASE_URL": dbs["customer"]}, log_dir=logs)
        started.append(customer.start(120))
        product = ServiceProcess(
            "product",
            env={**common, "ZT_DATABASE_URL": dbs["product"], "ZT_CUSTOMER_TARGET": customer.target},
            log_dir=logs,
        )
        started.append(product.start(120))
        data_hub = ServiceProcess(
            "data_hub",
            env={
                **common,
                "ZT_DATABASE_URL": dbs["data_hub"],
                "ZT_DATAHUB_GROUP_ID": f"e2e-{suffix}",
                # a view miss asks the customer service whether the customer exists (ADR 0008)
                "ZT_CUSTOMER_TARGET": customer.target,
            },
            log_dir=logs,
        )
        started.append(data_hub.start(120))
        gateway = ServiceProcess(
            "gateway",
            env={
                **common,
                "ZT_CUSTOMER_TARGET": customer.target,
                "ZT_PRODUCT_TARGET": product.target,
                "ZT_DATAHUB_TARGET": data_hub.target,
            },
            log_dir=logs,
        )
        started.append(gateway.start(60))
        yield Platform(gateway, {p.component: p for p in started})
    finally:
        for proc in reversed(started):
            proc.stop(15)
        for name in dbs:
            try:
                postgres_server.drop_database(f"e2e_{name}_{suffix}")
            except Exception as exc:  # the cluster is throw-away; never mask the test's outcome
                print(f"could not drop e2e database {name}: {exc}")
