"""Real services on a PostgreSQL cluster of the test's OWN (``own_pg``), which the test stops,
makes refuse, or turns into a standby, and brings back — never the session's shared database.

The services run as real processes (``python -m services.cli <name>``) with the session's real
Kafka (the product service checks its topics at start-up; the outbox relays run as in
production, on the same connection pool as the RPCs, where a test does not turn them off).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status

from bank.customer.v1 import customer_pb2
from devtools import stack
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from tests.support.procs import ServiceProcess
from tests.unit.customer.ids import make_id, serial

METADATA = (("authorization", f"Bearer {mint_token(DEV_SECRET, ALL_SCOPES, client_id='outage-test')}"),)


@pytest.fixture
def own_pg() -> Iterator[stack.PostgresServer]:
    """A PostgreSQL cluster for this test alone (initdb in a temp dir), removed afterwards.

    With ``synchronous_commit`` back on, as in production: the throw-away clusters turn it off,
    and then a commit acknowledged moments before an immediate stop (a crash) is lost — a test
    of writes surviving a crash would see acknowledged rows vanish. (``fsync = off`` only loses
    data on an OS crash: the WAL written before the kill is in the page cache.)"""
    pg = stack.PostgresServer()
    pg.start()
    try:
        stack.run_coro(
            lambda: stack._pg_execute(
                stack._asyncpg_dsn(pg.admin_url), "ALTER SYSTEM SET synchronous_commit = on", "SELECT pg_reload_conf()"
            )
        )
        yield pg
    finally:
        pg.stop()


def service_env(kafka: str, db_url: str, **extra: str) -> dict[str, str]:
    return {
        "ZT_DATABASE_URL": db_url,
        "ZT_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ZT_OUTBOX_POLL_INTERVAL_S": "0.2",
        "ZT_KAFKA_TOPIC_PREFIX": f"o{uuid.uuid4().hex[:6]}.",
        **extra,
    }


def customer_message() -> customer_pb2.Customer:
    """A valid, unique person (unique national ID, mobile and e-mail)."""
    n = next(serial)
    born = date.today() - timedelta(days=365 * 30 + 40 + n % 300)
    return customer_pb2.Customer(
        full_name="王小明",
        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
        national_id=make_id(born, region=f"3201{n % 100:02d}", seq=n % 1000),
        mobile=f"13{n % 1_000_000_000:09d}",
        email=f"wang.{n}@example.com",
    )


def customer_json() -> dict[str, Any]:
    """The same, as a channel app POSTs it to /v1/customers."""
    message = customer_message()
    born = message.birth_date
    return {
        "fullName": message.full_name,
        "birthDate": {"year": born.year, "month": born.month, "day": born.day},
        "nationalId": message.national_id,
        "mobile": message.mobile,
        "email": message.email,
    }


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    reason: str


async def outcome(call: Awaitable[Any]) -> Failure | None:
    """None if the call succeeded, else its code and ErrorInfo reason."""
    try:
        await call
    except grpc.aio.AioRpcError as err:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        reason = ""
        for detail in status.details if status else ():
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason = info.reason
        return Failure(err.code(), reason)
    return None


def log_lines(proc: ServiceProcess) -> list[dict[str, Any]]:
    """The process's JSON log lines (anything else it printed is skipped)."""
    lines = []
    for raw in proc.log_text().splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def unavailable_logs(proc: ServiceProcess) -> list[dict[str, Any]]:
    return [line for line in log_lines(proc) if line.get("message") == "rpc failed: database unavailable"]


def internal_logs(proc: ServiceProcess) -> list[dict[str, Any]]:
    """The interceptor's INTERNAL path ("rpc failed", with a stack trace)."""
    return [line for line in log_lines(proc) if line.get("message") == "rpc failed"]


@dataclass
class Timeline:
    """Monotonic times of what happened, for the report and the timing assertions."""

    t0: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        self.marks[name] = now = time.monotonic()
        return now

    def __str__(self) -> str:
        return ", ".join(f"{k} {v - self.t0:.3f}s" for k, v in self.marks.items())


async def until_accepting(pg: stack.PostgresServer, timeout: float = 30.0, every: float = 0.02) -> float:
    """Poll a fresh connection every ``every`` s; the monotonic time of the first that works."""
    import asyncpg  # type: ignore[import-untyped]

    dsn = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(every)
            continue
        accepted = time.monotonic()
        await conn.close()
        return accepted


def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir(exist_ok=True)
    return path
