"""Real processes for the product gRPC tests: one customer service, one product service per backend.

Processes are module-scoped (started once per test module and backend) to keep the suite fast.
The customer service runs on SQLite (its backend is not what these tests are about); the product
service runs on PostgreSQL and on SQLite.
"""

from __future__ import annotations

import base64
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import grpc
import pytest
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from bank.product.v1 import product_pb2_grpc
from devtools import stack
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from services.kit.db import create_engine
from services.kit.migrations import upgrade
from services.product.main import MIGRATIONS
from tests.support.procs import ServiceProcess
from tests.unit.customer.ids import make_id, serial

#: The caller of the tests: a channel app with every scope but customers:read — so a working
#: customer lookup proves the product service calls with its OWN token, not the user's.
APP_SCOPES = [s for s in ALL_SCOPES if s != "customers:read"]
CUSTOMER_DEADLINE_S = 1.0


def customer_env(kafka: str, db_url: str) -> dict[str, str]:
    """What the customer service needs; key material is random per test run."""
    key = base64.b64encode(os.urandom(32)).decode()
    blind = base64.b64encode(os.urandom(32)).decode()
    return {
        "ZT_DATABASE_URL": db_url,
        "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ZT_PII_KEY": key,
        "ZT_PII_KEY_ID": "k1",
        "ZT_BLIND_INDEX_KEY": blind,
        "ZT_KAFKA_TOPIC_PARTITIONS": "3",
    }


def product_env(kafka: str, db_url: str, customer_target: str, *, replica: bool = False) -> dict[str, str]:
    """The product service's env. The eligibility replica (ADR 0054) is off unless asked for: these
    tests are about the lookup (CheckEligibility would otherwise answer without it once the
    replica caught up); test_replica_kafka.py turns it on, each process in a group of its own."""
    return {
        "ZT_PRODUCT_ELIGIBILITY_REPLICA": "true" if replica else "false",
        "ZT_PRODUCT_REPLICA_GROUP_ID": f"product-eligibility-{uuid.uuid4().hex[:8]}",
        "ZT_DATABASE_URL": db_url,
        "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ZT_CUSTOMER_TARGET": customer_target,
        "ZT_CUSTOMER_DEADLINE_S": str(CUSTOMER_DEADLINE_S),
        "ZT_KAFKA_TOPIC_PARTITIONS": "3",
        "ZT_OUTBOX_POLL_INTERVAL_S": "0.2",
    }


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """The product's migrated database, on PostgreSQL and on SQLite (the use-case tests)."""
    url: str = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    eng = create_engine(url)
    await upgrade(eng, MIGRATIONS)
    yield eng
    await eng.dispose()


def start_customer(kafka: str, log_dir: Path, port: int | None = None, db: Path | None = None) -> ServiceProcess:
    db = db or log_dir / f"customer-{uuid.uuid4().hex[:6]}.db"
    env = customer_env(kafka, f"sqlite+aiosqlite:///{db}")
    return ServiceProcess("customer", env=env, log_dir=log_dir, port=port).start()


@pytest.fixture(scope="module")
def proc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("procs")


@pytest.fixture(scope="module")
def customer_proc(kafka_server: stack.KafkaLike, proc_dir: Path) -> Iterator[ServiceProcess]:
    proc = start_customer(kafka_server.bootstrap_servers, proc_dir)
    yield proc
    proc.stop()


@dataclass
class ProductStack:
    backend: str
    product: ServiceProcess
    customer: ServiceProcess
    db_url: str


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def product_stack(
    request: pytest.FixtureRequest,
    kafka_server: stack.KafkaLike,
    customer_proc: ServiceProcess,
    proc_dir: Path,
) -> Iterator[ProductStack]:
    backend: str = request.param
    db_name = f"product_{uuid.uuid4().hex[:10]}"
    if backend == "postgresql":
        pg: stack.PostgresLike = request.getfixturevalue("postgres_server")
        url = pg.create_database(db_name)
    else:
        url = f"sqlite+aiosqlite:///{proc_dir / (db_name + '.db')}"
    env = product_env(kafka_server.bootstrap_servers, url, customer_proc.target)
    proc = ServiceProcess("product", env=env, log_dir=proc_dir).start()
    yield ProductStack(backend, proc, customer_proc, url)
    proc.stop()
    if backend == "postgresql":
        pg.drop_database(db_name)


def metadata(scopes: list[str] | None = None) -> tuple[tuple[str, str], ...]:
    token = mint_token(DEV_SECRET, scopes or APP_SCOPES, client_id="test-app")
    return (("authorization", f"Bearer {token}"),)


ADMIN = metadata(["customers:write", "customers:read"])


@dataclass
class Clients:
    product: product_pb2_grpc.ProductServiceStub
    customer: customer_pb2_grpc.CustomerServiceStub
    stack: ProductStack


@pytest.fixture(scope="module")
async def clients(product_stack: ProductStack) -> AsyncIterator[Clients]:
    product_channel = grpc.aio.insecure_channel(product_stack.product.target)
    customer_channel = grpc.aio.insecure_channel(product_stack.customer.target)
    yield Clients(
        product_pb2_grpc.ProductServiceStub(product_channel),
        customer_pb2_grpc.CustomerServiceStub(customer_channel),
        product_stack,
    )
    await product_channel.close()
    await customer_channel.close()


# --- customers through the real customer service ------------------------------------------------

_AREAS = ("110101", "110102", "310101", "310104", "440103", "440104", "330102", "510104")


def national_id(birth: date) -> str:
    """A valid mainland resident ID (GB 11643 check digit) for the birth date, unique in this run.

    Many test customers share a birth date, so the sequence is the tests' one per-process serial
    (random sequences collide by the birthday paradox) spread over several area codes.
    """
    n = next(serial)
    return make_id(birth, region=_AREAS[(n // 1000) % len(_AREAS)], seq=n % 1000)


def birth_for_age(age: int) -> date:
    today = date.today()
    return date(today.year - age - 1, 6, 15) if (today.month, today.day) < (6, 15) else date(today.year - age, 6, 15)


async def make_customer(
    customers: customer_pb2_grpc.CustomerServiceStub,
    *,
    age: int = 35,
    verify: bool = True,
    risk_score: int | None = 55,
) -> str:
    """A customer: PENDING, or ACTIVE (KYC approved) and optionally risk-assessed (55 → C3)."""
    birth = birth_for_age(age)
    created = await customers.CreateCustomer(
        customer_pb2.CreateCustomerRequest(
            customer=customer_pb2.Customer(
                full_name="测试客户",
                birth_date=date_pb2.Date(year=birth.year, month=birth.month, day=birth.day),
                national_id=national_id(birth),
                mobile=f"13{random.randint(0, 999_999_999):09d}",
            ),
            request_id=f"req-{uuid.uuid4().hex}",
        ),
        metadata=ADMIN,
        timeout=10,
    )
    cid = created.customer_id
    if verify:
        await customers.VerifyCustomer(
            customer_pb2.VerifyCustomerRequest(
                customer_id=cid, outcome=customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED
            ),
            metadata=ADMIN,
            timeout=10,
        )
        if risk_score is not None:
            await customers.AssessRisk(
                customer_pb2.AssessRiskRequest(customer_id=cid, questionnaire_score=risk_score),
                metadata=ADMIN,
                timeout=10,
            )
    return cid
