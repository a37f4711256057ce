"""Process entry points of the customer service (``zhongtai customer``, ``zhongtai relay --service customer``).

Wiring only: settings → engine, crypto, relay, servicer, server; started in order, stopped in
reverse (see docs/service-guide.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.customer.api import CustomerApi
from services.customer.config import CustomerSettings, build_crypto
from services.customer.service import Clock, CustomerService
from services.customer.store import PiiCodec
from services.kit.auth import TokenVerifier
from services.kit.config import load_settings
from services.kit.db import EngineLifecycle, create_engine
from services.kit.grpc_server import GrpcServer
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import Component, run_until_signalled
from services.kit.logging import configure_logging, get_logger
from services.kit.migrations import upgrade
from services.kit.outbox import OutboxRelay
from services.kit.telemetry import setup_telemetry

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = customer_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name

log = get_logger("zhongtai.customer")

__all__ = ["CustomerSettings", "build_crypto", "migrate", "relay", "run", "serve"]


async def migrate() -> None:
    settings = load_settings(CustomerSettings)
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


def _relay(settings: CustomerSettings, engine: AsyncEngine) -> OutboxRelay:
    producer = make_producer(settings.kafka_bootstrap_servers, client_id=settings.kafka_client_id)
    return OutboxRelay(
        engine,
        producer,
        name=settings.service_name,
        owns_producer=True,
        batch_size=settings.outbox_batch_size,
        poll_interval_s=settings.outbox_poll_interval_s,
        topic_prefix=settings.kafka_topic_prefix,
    )


async def serve(settings: CustomerSettings, stop_event: asyncio.Event | None = None) -> None:
    configure_logging(settings.service_name, settings.log_level)
    setup_telemetry(settings.service_name, console=settings.otel_console, metrics_port=settings.metrics_port)
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    await upgrade(engine, MIGRATIONS)  # idempotent; prod also runs the migrations Job
    cipher, blind = build_crypto(settings)
    components: list[Component] = [EngineLifecycle(engine)]
    after_commit: list[Callable[[], None]] = []
    if settings.outbox_relay_enabled:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            partitions=settings.kafka_topic_partitions,
            replication_factor=settings.kafka_replication_factor,
            prefix=settings.kafka_topic_prefix,
        )
        relay = _relay(settings, engine)
        components.append(relay)
        after_commit.append(relay.wake)
    service = CustomerService(
        engine,
        PiiCodec(cipher, blind),
        after_commit=after_commit,
        clock=Clock(ZoneInfo(settings.business_timezone)),
        risk_validity=timedelta(days=settings.risk_assessment_validity_days),
    )
    servicer = CustomerApi(service)
    server = GrpcServer(
        host=settings.grpc_host,
        port=settings.grpc_port,
        register=lambda s: customer_pb2_grpc.add_CustomerServiceServicer_to_server(servicer, s),
        service_names=[SERVICE_NAME],
        verifier=TokenVerifier.from_settings(settings),
        max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        shutdown_grace_s=settings.grpc_shutdown_grace_s,
    )
    components.append(server)
    log.info("customer service starting", pii_key_id=settings.pii_key_id, relay=settings.outbox_relay_enabled)
    # start in order, stop in reverse: server first (drain), then the relay, then the engine
    await run_until_signalled(components, stop_event=stop_event)


async def relay(stop_event: asyncio.Event | None = None) -> None:
    """A standalone outbox relay for the customer database (``zhongtai relay --service customer``)."""
    settings = load_settings(CustomerSettings)
    configure_logging(f"{settings.service_name}-relay", settings.log_level)
    setup_telemetry(f"{settings.service_name}-relay", console=settings.otel_console, metrics_port=settings.metrics_port)
    engine = create_engine(settings.database_url, pool_size=2)
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        prefix=settings.kafka_topic_prefix,
    )
    await run_until_signalled([EngineLifecycle(engine), _relay(settings, engine)], stop_event=stop_event)


def run() -> None:
    asyncio.run(serve(load_settings(CustomerSettings)))
