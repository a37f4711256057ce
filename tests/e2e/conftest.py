"""The whole platform for the end-to-end tests, started once per session and shared by the
modules: customer, product, data_hub and gateway as ``python -m services.cli <name>`` processes
on free ports, with a real Apache Kafka (``kafka_server``) and one PostgreSQL database per service
(``postgres_server``), through :func:`tests.support.platform.running_platform`. Spans go to each
process's stdout (``ZT_OTEL_CONSOLE``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools import stack
from tests.support.platform import Platform, running_platform


@pytest.fixture(scope="session")
def platform(
    kafka_server: stack.KafkaLike, postgres_server: stack.PostgresLike, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    common = {"ZT_OTEL_CONSOLE": "true", "ZT_OUTBOX_POLL_INTERVAL_S": "0.2"}
    with running_platform(kafka_server, postgres_server, tmp_path_factory.mktemp("e2e-logs"), common=common) as running:
        yield running
