"""Shared fixtures for the whole test suite.

Sections (add new fixtures to the matching section, or start a new one at the end):

1. Markers: tests under tests/integration and tests/e2e are marked automatically.
2. Real infrastructure: `kafka_server`, `postgres_server` (session, started lazily by
   devtools/stack.py: env -> testcontainers -> local processes), `pg_url`, `sqlite_url`,
   `kafka_topic`.
3. Reporting: the Kafka and PostgreSQL versions the session ran against.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import stack

# --------------------------------------------------------------------------------------------
# 1. Markers
# --------------------------------------------------------------------------------------------

_AUTO_MARKS = {"integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for folder, mark in _AUTO_MARKS.items():
            if folder in parts:
                item.add_marker(getattr(pytest.mark, mark))


# --------------------------------------------------------------------------------------------
# 2. Real infrastructure
# --------------------------------------------------------------------------------------------

# What the session actually started, for the terminal summary: name -> description.
_STARTED: dict[str, str] = {}


def _slug(request: pytest.FixtureRequest, max_len: int = 40) -> str:
    """The test's name squeezed into [a-z0-9_] (to make names traceable to their test)."""
    return re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:max_len]


def _timings(server: object) -> str:
    timings: dict[str, float] = getattr(server, "timings", {})
    return f" [{', '.join(f'{k} {v:.1f}s' for k, v in timings.items())}]" if timings else ""


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[stack.KafkaLike]:
    """A real Apache Kafka for the session: `.bootstrap_servers`, `.version`, `.description`.

    From ZT_TEST_KAFKA_BOOTSTRAP if set, else testcontainers (Docker), else a local JVM.
    Started on first use only, stopped at session end.
    """
    server = stack.kafka_for_tests()
    server.start()
    _STARTED["kafka"] = f"{server.description} at {server.bootstrap_servers}{_timings(server)}"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[stack.PostgresLike]:
    """A real PostgreSQL for the session: `.create_database(name) -> url`, `.version`.

    From ZT_TEST_POSTGRES_URL if set, else testcontainers (Docker), else initdb in a temp dir.
    Started on first use only, stopped at session end.
    """
    server = stack.postgres_for_tests()
    server.start()
    _STARTED["postgresql"] = f"{server.description}{_timings(server)}"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[stack.RedisServer]:
    """A real redis-server for the session (the gateway's shared quotas): `.url`."""
    server = stack.RedisServer()
    server.start()
    _STARTED["redis"] = f"{server.description} at {server.url}"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: stack.PostgresLike, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test: `postgresql+asyncpg://...`.

    Dropped afterwards (WITH (FORCE)); dispose your engines before the test ends.
    """
    name = f"t_{_slug(request)}_{uuid.uuid4().hex[:8]}"  # <= 63 chars, a valid identifier
    url = postgres_server.create_database(name)
    yield url
    try:
        postgres_server.drop_database(name)
    except Exception as exc:  # never mask the test's own outcome; the cluster is throw-away
        request.node.warn(pytest.PytestWarning(f"could not drop test database {name}: {exc}"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file database for this test: `sqlite+aiosqlite:///<tmp>/db.sqlite`."""
    return f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"


KafkaTopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def kafka_topic(
    kafka_server: stack.KafkaLike, request: pytest.FixtureRequest
) -> AsyncIterator[KafkaTopicFactory]:
    """Factory creating uniquely named topics, deleted after the test.

        topic = await kafka_topic()                             # 1 partition
        topic = await kafka_topic("customer.events", partitions=3)

    Returns once every partition has a leader, so producers can send right away.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_server.bootstrap_servers)
    await admin.start()
    created: list[str] = []

    async def create(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix)
        name = f"{safe}.{_slug(request).replace('_', '-')}.{uuid.uuid4().hex[:8]}"
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=config or {})]
        )
        created.append(name)
        await _wait_for_leaders(admin, name, partitions)
        return name

    try:
        yield create
    finally:
        if created:
            try:
                await admin.delete_topics(created)
            except Exception as exc:
                request.node.warn(pytest.PytestWarning(f"could not delete topics {created}: {exc}"))
        await admin.close()


async def _wait_for_leaders(admin: Any, topic: str, partitions: int) -> None:
    async with asyncio.timeout(30):
        while True:
            described = await admin.describe_topics([topic])
            parts = described[0].get("partitions", []) if described else []
            if len(parts) == partitions and all(p.get("leader", -1) >= 0 for p in parts):
                return
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------
# 3. Reporting
# --------------------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _STARTED:
        return
    terminalreporter.section("infrastructure used")
    for name, description in _STARTED.items():
        terminalreporter.write_line(f"{name}: {description}")
