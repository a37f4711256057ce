"""The product service process: settings, migrations, wiring, lifecycle (``zhongtai product``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from bank.product.v1 import product_pb2, product_pb2_grpc
from services.kit.auth import TokenVerifier
from services.kit.config import ServiceSettings, load_settings
from services.kit.db import EngineLifecycle, create_engine
from services.kit.grpc_server import GrpcServer
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import Component, run_until_signalled
from services.kit.logging import configure_logging
from services.kit.migrations import upgrade
from services.kit.outbox import OutboxRelay
from services.kit.service_auth import parse_scopes, service_token_provider
from services.kit.telemetry import setup_telemetry
from services.product.api import ProductApi
from services.product.customers import CustomerDirectory
from services.product.usecases import ProductUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name


class ProductSettings(ServiceSettings):
    """``ZT_`` settings of the product service (on top of the shared ones)."""

    service_name: str = "product"
    #: Overall budget of one customer lookup, retries included (ZT_CUSTOMER_DEADLINE_S).
    customer_deadline_s: float = Field(2.0, gt=0, le=60)
    #: The product service's own client id and scopes when it calls other services.
    service_client_id: str = "zhongtai-product"
    service_token_scopes: str = "customers:read"  # noqa: S105 - scope names, not a secret
    #: prod: a token file kept fresh by the platform (client-credentials grant); dev/test sign.
    service_token_file: Path | None = None
    service_token_ttl_s: int = Field(300, ge=30, le=3600)

    @field_validator("service_token_scopes")
    @classmethod
    def _known_scopes(cls, value: str) -> str:
        return " ".join(parse_scopes(value))

    @model_validator(mode="after")
    def _prod_token_file(self) -> ProductSettings:
        if self.environment == "prod" and self.service_token_file is None:
            raise ValueError("ZT_SERVICE_TOKEN_FILE is required when ZT_ENVIRONMENT=prod")
        return self


def _tokens(settings: ProductSettings):  # type: ignore[no-untyped-def]
    secret = settings.auth_hs256_secret.get_secret_value() if settings.auth_hs256_secret else None
    return service_token_provider(
        environment=settings.environment,
        client_id=settings.service_client_id,
        scopes=settings.service_token_scopes.split(),
        hs256_secret=secret,
        token_file=settings.service_token_file,
        issuer=settings.auth_issuer,
        audience=settings.auth_audience,
        ttl_s=settings.service_token_ttl_s,
    )


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
    customers = CustomerDirectory(settings.customer_target, _tokens(settings), deadline_s=settings.customer_deadline_s)
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
