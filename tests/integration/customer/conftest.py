"""One REAL customer service process per backend (SQLite, PostgreSQL), shared by the package.

Each process gets its own database, the session's real Kafka, dev auth and a fast relay poll.
Tests create their own customers (unique national IDs) so they never depend on each other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.cli import DEV_SECRET
from services.kit.auth import mint_token
from tests.support.procs import ServiceProcess
from tests.unit.customer.ids import make_id, serial

BACKENDS = ["sqlite", "postgresql"]
WRITE_SCOPES = ["customers:read", "customers:write"]
PII_SCOPES = [*WRITE_SCOPES, "pii:read"]


@dataclass
class RunningService:
    backend: str
    proc: ServiceProcess
    database_url: str
    env: dict[str, str]

    @property
    def target(self) -> str:
        return self.proc.target


@pytest.fixture(scope="package", params=BACKENDS)
def customer_service(
    request: pytest.FixtureRequest, kafka_server: Any, tmp_path_factory: Any
) -> Iterator[RunningService]:
    backend = request.param
    tmp: Path = tmp_path_factory.mktemp(f"customer-{backend}")
    pg = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'customer.db'}"
        db_name = ""
    else:
        pg = request.getfixturevalue("postgres_server")
        db_name = f"t_customer_{uuid.uuid4().hex[:8]}"
        url = pg.create_database(db_name)
    env = {
        "ZT_DATABASE_URL": url,
        "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka_server.bootstrap_servers,
        "ZT_OUTBOX_POLL_INTERVAL_S": "0.2",
    }
    proc = ServiceProcess("customer", env=env, log_dir=tmp)
    proc.start()
    try:
        yield RunningService(backend, proc, url, proc.env)
    finally:
        proc.stop()
        if pg is not None:
            pg.drop_database(db_name)


def token(scopes: list[str], client_id: str = "teller-app") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {mint_token(DEV_SECRET, scopes, client_id=client_id)}")]


WRITER = token(WRITE_SCOPES)
PII_READER = token(PII_SCOPES, client_id="kyc-officer")


@dataclass(frozen=True)
class Person:
    full_name: str
    born: date
    national_id: str
    mobile: str
    email: str

    def message(self) -> customer_pb2.Customer:
        return customer_pb2.Customer(
            full_name=self.full_name,
            birth_date=date_pb2.Date(year=self.born.year, month=self.born.month, day=self.born.day),
            national_id=self.national_id,
            mobile=self.mobile,
            email=self.email,
        )


def person(*, age: int = 30) -> Person:
    """A valid, unique person (unique national ID, mobile and e-mail)."""
    n = next(serial)
    born = date.today() - timedelta(days=365 * age + 40 + n % 300)
    return Person(
        full_name="王小明",
        born=born,
        national_id=make_id(born, region=f"3201{n % 100:02d}", seq=n % 1000),
        mobile=f"13{n % 1_000_000_000:09d}",
        email=f"wang.{n}@example.com",
    )


class Client:
    """A thin async client over the service's stub."""

    def __init__(self, stub: customer_pb2_grpc.CustomerServiceStub) -> None:
        self.stub = stub

    async def create(self, who: Person | None = None, *, request_id: str = "", md: Any = None) -> customer_pb2.Customer:
        who = who or person()
        request = customer_pb2.CreateCustomerRequest(customer=who.message(), request_id=request_id)
        return await self.stub.CreateCustomer(request, metadata=md or WRITER, timeout=10)

    async def get(self, customer_id: str, *, md: Any = None) -> customer_pb2.Customer:
        request = customer_pb2.GetCustomerRequest(customer_id=customer_id)
        return await self.stub.GetCustomer(request, metadata=md or WRITER, timeout=10)

    async def verify(self, customer_id: str, *, approve: bool = True, etag: str = "", reason: str = "") -> Any:
        outcome = (
            customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED
            if approve
            else customer_pb2.VerifyCustomerRequest.OUTCOME_REJECTED
        )
        request = customer_pb2.VerifyCustomerRequest(customer_id=customer_id, outcome=outcome, etag=etag, reason=reason)
        return await self.stub.VerifyCustomer(request, metadata=WRITER, timeout=10)

    async def assess(self, customer_id: str, score: int) -> customer_pb2.Customer:
        request = customer_pb2.AssessRiskRequest(customer_id=customer_id, questionnaire_score=score)
        return await self.stub.AssessRisk(request, metadata=WRITER, timeout=10)

    async def close(self, customer_id: str, reason: str = "customer request") -> customer_pb2.Customer:
        request = customer_pb2.CloseCustomerRequest(customer_id=customer_id, reason=reason)
        return await self.stub.CloseCustomer(request, metadata=WRITER, timeout=10)

    async def active(self, who: Person | None = None) -> customer_pb2.Customer:
        created = await self.create(who)
        return await self.verify(created.customer_id)


@pytest.fixture
async def client(customer_service: RunningService) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(customer_service.target) as channel:
        yield Client(customer_pb2_grpc.CustomerServiceStub(channel))


@dataclass
class RpcFailure:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    fields: dict[str, str]


async def failure(call: Any) -> RpcFailure:
    """Await a call that must fail; decode its google.rpc.Status details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    err = caught.value
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    reason, metadata, fields = "", {}, {}
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            fields = {v.field: v.description for v in bad.field_violations}
    return RpcFailure(err.code(), err.details() or "", reason, metadata, fields)
