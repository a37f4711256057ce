"""PII never appears in the service's logs (real process) nor in span attributes (in-process spans)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import field_mask_pb2

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from devtools.stack import free_port
from services.cli import DEV_SECRET
from services.customer.main import CustomerSettings, serve
from services.kit.config import load_settings
from services.kit.telemetry import install_in_memory
from tests.integration.customer.conftest import PII_READER, WRITER, Client, Person, RunningService, person


def secrets_of(who: Person) -> list[str]:
    return [who.national_id, who.mobile, who.email, who.full_name, who.born.isoformat()]


async def exercise(client: Client) -> list[Person]:
    """Successful and failing calls that carry PII in requests, responses and errors."""
    who, twin = person(), person()
    rid = f"priv-{uuid.uuid4().hex}"  # caller-chosen request ids are echoed in errors: keep PII out of them
    c = await client.create(who, request_id=rid)
    await client.get(c.customer_id, md=PII_READER)
    await client.stub.ListCustomers(customer_pb2.ListCustomersRequest(page_size=5), metadata=PII_READER, timeout=10)
    update = customer_pb2.UpdateCustomerRequest(
        customer=customer_pb2.Customer(customer_id=c.customer_id, mobile=twin.mobile, email=twin.email),
        update_mask=field_mask_pb2.FieldMask(paths=["mobile", "email"]),
    )
    await client.stub.UpdateCustomer(update, metadata=WRITER, timeout=10)
    duplicate = Person(twin.full_name, who.born, who.national_id, twin.mobile, twin.email)
    bad_check = Person(twin.full_name, twin.born, twin.national_id[:17] + "Y", twin.mobile, twin.email)
    for failing in (duplicate, bad_check):
        with pytest.raises(grpc.aio.AioRpcError):
            await client.create(failing)
    with pytest.raises(grpc.aio.AioRpcError):
        await client.create(twin, request_id=rid)  # request id reuse
    await client.verify(c.customer_id)
    return [who, twin]


async def test_pii_never_reaches_the_process_log(client: Client, customer_service: RunningService) -> None:
    people = await exercise(client)
    log = customer_service.proc.log_text()
    assert '"rpc"' in log or '"message": "rpc"' in log or "rpc" in log  # the access log is there
    for who in people:
        for secret in secrets_of(who):
            assert secret not in log, "PII in the service log"


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """serve() configures process-wide logging: give the rest of the session its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
        structlog.contextvars.clear_contextvars()


async def test_pii_never_reaches_span_attributes(kafka_server: Any, tmp_path: Path, capsys: Any) -> None:
    telemetry = install_in_memory("customer-test")
    telemetry.spans.clear()
    port = free_port()
    settings = load_settings(
        CustomerSettings,
        environment="test",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'spans.db'}",
        grpc_port=port,
        kafka_bootstrap_servers=kafka_server.bootstrap_servers,
        auth_hs256_secret=DEV_SECRET,
        outbox_poll_interval_s=0.2,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with restored_logging():
        task = asyncio.create_task(serve(settings, stop_event=stop))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = customer_pb2_grpc.CustomerServiceStub(channel)
                for _ in range(100):  # wait until the in-process server answers
                    try:
                        await stub.ListCustomers(customer_pb2.ListCustomersRequest(), metadata=WRITER, timeout=1)
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
                people = await exercise(Client(stub))
            await asyncio.sleep(1.0)  # let the relay publish (its spans too)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    spans = telemetry.spans.get_finished_spans()
    names = {s.name for s in spans}
    assert any("CustomerService/CreateCustomer" in n for n in names), names
    assert any(n.endswith("publish") for n in names), names
    dumped = []
    for span in spans:
        dumped.append(span.name)
        dumped += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            dumped += [event.name, *(f"{k}={v}" for k, v in (event.attributes or {}).items())]
    blob = "\n".join(dumped)
    logs = capsys.readouterr().out
    for who in people:
        for secret in secrets_of(who):
            assert secret not in blob, "PII in a span"
            assert secret not in logs, "PII in the in-process log"
