"""Data hub integration helpers: a hub process, events produced as the services produce them.

The topics are fixed by the contract, so every test of the session would share them (and a hub
would fold in other tests' customers and products): each test gets its own topic namespace
(``ZT_KAFKA_TOPIC_PREFIX``, :func:`namespace`), its hub consumes and publishes there, and
:func:`send` produces there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.datahub.v1 import datahub_pb2, datahub_pb2_grpc
from devtools.stack import free_port
from devtools.synth import SynthEvent, produce
from services.cli import DEV_SECRET
from services.data_hub import store
from services.data_hub.main import MIGRATIONS
from services.kit.auth import mint_token
from services.kit.db import UnitOfWork, create_engine
from services.kit.kafka import ensure_topics
from services.kit.migrations import upgrade
from tests.support.procs import ServiceProcess

TOKEN = mint_token(DEV_SECRET, ["views:read", "segments:admin"], client_id="dh-tests")
META = (("authorization", f"Bearer {TOKEN}"),)


@contextlib.asynccontextmanager
async def migrated_hub_engine(url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on ``url`` with the data hub's migrations applied, disposed at the end."""
    engine = create_engine(url)
    try:
        await upgrade(engine, MIGRATIONS)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
async def hub_engine(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    """The data hub's migrated database, on PostgreSQL and on SQLite."""
    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    async with migrated_hub_engine(url) as engine:
        yield engine


def namespace() -> str:
    """A fresh topic namespace for one test (a valid ``ZT_KAFKA_TOPIC_PREFIX``)."""
    return f"t{uuid.uuid4().hex[:10]}."


def hub(
    url: str, bootstrap: str, log_dir: Path, *, topic_prefix: str, group: str | None = None, **env: str
) -> ServiceProcess:
    return ServiceProcess(
        "data_hub",
        env={
            "ZT_DATABASE_URL": url,
            "ZT_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ZT_KAFKA_TOPIC_PREFIX": topic_prefix,
            "ZT_DATAHUB_GROUP_ID": group or f"dh-test-{uuid.uuid4().hex[:8]}",
            "ZT_KAFKA_TOPIC_PARTITIONS": "3",
            # A view miss asks the customer service (ADR 0008): nobody listens here unless a test
            # starts one and passes its target (never a stray service on the default port).
            "ZT_CUSTOMER_TARGET": f"127.0.0.1:{free_port()}",
            **env,
        },
        log_dir=log_dir,
    )


async def send(events: Sequence[SynthEvent], bootstrap: str, topic_prefix: str) -> None:
    """Produce the events as the services' relays would in that namespace."""
    await ensure_topics(bootstrap, partitions=3, prefix=topic_prefix)
    records = [dataclasses.replace(r, topic=topic_prefix + r.topic) for r in (e.record() for e in events)]
    await produce(records, bootstrap, client_id=f"dh-test-{uuid.uuid4().hex[:6]}")


async def docs_for(engine: AsyncEngine, prefix: str) -> dict[str, bytes]:
    async with UnitOfWork(engine) as uow:
        tables = await store.active_tables(uow.session)
        return {k: v for k, v in (await store.all_docs(uow.session, tables)).items() if k.startswith(prefix)}


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str | Callable[[], Awaitable[str]] = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.25)
    detail = what if isinstance(what, str) else await what()
    raise AssertionError(f"timed out after {timeout}s waiting for {detail}")


def stub(target: str) -> tuple[grpc.aio.Channel, datahub_pb2_grpc.CustomerViewServiceStub]:
    channel = grpc.aio.insecure_channel(target)
    return channel, datahub_pb2_grpc.CustomerViewServiceStub(channel)


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], float | None]:
    """The ErrorInfo reason and metadata of a failed call, and its RetryInfo delay (s) if any."""
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes), f"no rich status in {error}"
    info, retry, delay = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo(), None
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
        else:
            detail.Unpack(info)
    return info.reason, dict(info.metadata), delay


Record = tuple[bytes | None, bytes | None, dict[str, bytes]]


async def read_all(bootstrap: str, topic: str, *, timeout: float = 5.0) -> list[Record]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    out: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend((r.key, r.value, dict(r.headers or ())) for r in records)
            if not batch and out:
                break
    finally:
        await consumer.stop()
    return out


def view(doc: bytes) -> datahub_pb2.CustomerView:
    return datahub_pb2.CustomerView.FromString(doc)


async def converge(engine: AsyncEngine, prefix: str, expected: dict[str, bytes], timeout: float = 60.0) -> None:
    """Wait until the views of ``prefix`` equal ``expected``; on timeout, say which differ and how."""

    async def equal() -> bool:
        return await docs_for(engine, prefix) == expected

    async def explain() -> str:
        return explain_diff(await docs_for(engine, prefix), expected)

    await wait_until(equal, timeout, explain)


def explain_diff(got: dict[str, bytes], expected: dict[str, bytes]) -> str:
    """Which views differ, and a unified diff of the first one."""
    import difflib

    from google.protobuf import text_format

    if True:
        bad = sorted(k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k))
        if not bad:
            return "nothing (converged at the last moment)"
        k = bad[0]
        mine = text_format.MessageToString(view(got[k]), as_utf8=True) if got.get(k) else ""
        want = text_format.MessageToString(view(expected[k]), as_utf8=True) if expected.get(k) else ""
        diff = "\n".join(difflib.unified_diff(want.splitlines(), mine.splitlines(), "expected", "got", lineterm=""))
        return f"{len(bad)} of {len(expected)} views differ, e.g. {k}:\n{diff}"


async def caught_up(bootstrap: str, group: str, topic_prefix: str) -> bool:
    """The hub's group (``ZT_DATAHUB_GROUP_ID`` ``group`` in namespace ``topic_prefix``) has
    committed every record of the hub's topics (lag 0)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from services.data_hub.main import TOPICS
    from services.data_hub.rebuild import partitions_of

    tps = await partitions_of(bootstrap, tuple(topic_prefix + t for t in TOPICS))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(topic_prefix + group)
        end = await consumer.end_offsets(tps)
    except KafkaError:  # e.g. the group coordinator is not there yet on a fresh broker
        return False
    finally:
        await consumer.stop()
        await admin.close()
    return all(tp in committed and committed[tp].offset >= end[tp] for tp in tps)
