"""The product service process: settings, migrations, wiring, lifecycle (``zhongtai product``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from bank.product.v1 import product_pb2, product_pb2_grpc
from services.kit.auth import TokenVerifier
from services.kit.clients import CallerSettings
from services.kit.config import load_settings
from services.kit.db import EngineLifecycle, create_engine
from services.kit.grpc_server import GrpcServer
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import Component, run_until_signalled
from services.kit.logging import configure_logging
from services.kit.migrations import upgrade
from services.kit.outbox import OutboxRelay
from services.kit.telemetry import setup_telemetry
from services.product.api import ProductApi
from services.product.customers import CustomerDirectory
from services.product.usecases import ProductUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name


class ProductSettings(CallerSettings):
    """``ZT_`` settings of the product service (on top of the shared ones and the ``ZT_SERVICE_*``
    ones of its own token, :class:`services.kit.clients.CallerSettings`)."""

    service_name: str = "product"
    #: Overall budget of one customer lookup, retries included (ZT_CUSTOMER_DEADLINE_S).
    customer_deadline_s: float = Field(2.0, gt=0, le=60)
    #: The product service's own client id and scopes when it calls other services.
    service_client_id: str = "zhongtai-product"
    service_token_scopes: str = "customers:read"  # noqa: S105 - scope names, not a secret


async def migrate() -> None:
    settings = load_settings(ProductSettings)
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


async def serve(settings: ProductSettings, stop_event: asyncio.Event | None = None) -> None:
    configure_logging(settings.service_name, settings.log_level)
    setup_telemetry(settings.service_name, console=settings.otel_console, metrics_port=settings.metrics_port)
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    await upgrade(engine, MIGRATIONS)
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        partitions=settings.kafka_topic_partitions,
        replication_factor=settings.kafka_replication_factor,
        prefix=settings.kafka_topic_prefix,
    )
    components: list[Component] = [EngineLifecycle(engine)]
    after_commit = []
    if settings.outbox_relay_enabled:
        producer = make_producer(settings.kafka_bootstrap_servers, client_id=settings.kafka_client_id)
        relay = OutboxRelay(
            engine,
            producer,
            name=settings.service_name,
            owns_producer=True,
            batch_size=settings.outbox_batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
            topic_prefix=settings.kafka_topic_prefix,
        )
        components.append(relay)
        after_commit.append(relay.wake)
    customers = CustomerDirectory(
        settings.customer_target, settings.service_tokens(), deadline_s=settings.customer_deadline_s
    )
    servicer = ProductApi(ProductUseCases(engine, customers, after_commit=after_commit))
    server = GrpcServer(
        host=settings.grpc_host,
        port=settings.grpc_port,
        register=lambda s: product_pb2_grpc.add_ProductServiceServicer_to_server(servicer, s),
        service_names=[SERVICE_NAME],
        verifier=TokenVerifier.from_settings(settings),
        max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        shutdown_grace_s=settings.grpc_shutdown_grace_s,
    )
    # start in order, stop in reverse: server (drain), customer channel, relay, engine
    await run_until_signalled([*components, customers, server], stop_event=stop_event)


async def relay() -> None:
    """A standalone outbox relay for the product database (``zhongtai relay --service product``)."""
    settings = load_settings(ProductSettings)
    configure_logging(f"{settings.service_name}-relay", settings.log_level)
    setup_telemetry(f"{settings.service_name}-relay", console=settings.otel_console)
    engine = create_engine(settings.database_url, pool_size=2)
    producer = make_producer(settings.kafka_bootstrap_servers, client_id=f"{settings.kafka_client_id}-relay")
    outbox = OutboxRelay(
        engine,
        producer,
        name=f"{settings.service_name}-standalone",
        owns_producer=True,
        batch_size=settings.outbox_batch_size,
        poll_interval_s=settings.outbox_poll_interval_s,
        topic_prefix=settings.kafka_topic_prefix,
    )
    await run_until_signalled([EngineLifecycle(engine), outbox])


def run() -> None:
    asyncio.run(serve(load_settings(ProductSettings)))
