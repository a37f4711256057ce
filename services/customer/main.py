"""Process entry points of the customer service (``zhongtai customer``, ``zhongtai relay --service customer``).

Wiring only: settings → engine, crypto, relay, servicer, server; started in order, stopped in
reverse (see docs/service-guide.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2, customer_pb2_grpc
from services.customer.api import CustomerApi
from services.customer.service import Clock, CustomerService
from services.customer.store import PiiCodec
from services.kit.auth import TokenVerifier
from services.kit.config import ServiceSettings, load_settings
from services.kit.crypto import BlindIndex, FieldCipher, parse_key, parse_old_keys
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

# Documented, PUBLIC dev/test-only keys (base64 of SHA-256 of "zhongtai-dev-pii-key" and of
# "zhongtai-dev-blind-index-key"). Used when the variables are unset outside prod; refused in prod.
DEV_PII_KEY = "P4GnikIrg7C4yh5vh0Rea0YrG5IGPDcQ5dGvIvCytIY="
DEV_PII_KEY_ID = "dev1"
DEV_BLIND_INDEX_KEY = "NzsmNGQPPRJ6zcRSKbyhrzZh+Co0TgMmoYbDquHvXKU="

log = get_logger("zhongtai.customer")


class CustomerSettings(ServiceSettings):
    """ServiceSettings plus the PII keys (ZT_PII_KEY, ZT_PII_KEY_ID, ZT_PII_OLD_KEYS, ZT_BLIND_INDEX_KEY)."""

    service_name: str = "customer"
    pii_key: SecretStr | None = None
    pii_key_id: str = ""
    pii_old_keys: SecretStr = SecretStr("")
    blind_index_key: SecretStr | None = None
    risk_assessment_validity_days: int = Field(365, ge=1, le=3650)
    business_timezone: str = "Asia/Shanghai"

    @field_validator("pii_key", "blind_index_key")
    @classmethod
    def _key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value(), name="the key")
        return value

    @field_validator("pii_old_keys")
    @classmethod
    def _old_keys_shape(cls, value: SecretStr) -> SecretStr:
        parse_old_keys(value.get_secret_value())
        return value

    @field_validator("business_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _pii_keys(self) -> CustomerSettings:
        if self.environment == "prod":
            missing = [
                name
                for name, value in (
                    ("ZT_PII_KEY", self.pii_key),
                    ("ZT_PII_KEY_ID", self.pii_key_id),
                    ("ZT_BLIND_INDEX_KEY", self.blind_index_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)} required when ZT_ENVIRONMENT=prod (dev keys are refused)")
            dev = {DEV_PII_KEY, DEV_BLIND_INDEX_KEY}
            if self.pii_key is not None and self.pii_key.get_secret_value() in dev:
                raise ValueError("ZT_PII_KEY is the public dev key; refused when ZT_ENVIRONMENT=prod")
            if self.blind_index_key is not None and self.blind_index_key.get_secret_value() in dev:
                raise ValueError("ZT_BLIND_INDEX_KEY is the public dev key; refused when ZT_ENVIRONMENT=prod")
        if self.pii_key is None:
            self.pii_key = SecretStr(DEV_PII_KEY)
            self.pii_key_id = self.pii_key_id or DEV_PII_KEY_ID
        if not self.pii_key_id:
            raise ValueError("ZT_PII_KEY_ID is required when ZT_PII_KEY is set")
        if self.blind_index_key is None:
            self.blind_index_key = SecretStr(DEV_BLIND_INDEX_KEY)
        return self


def build_crypto(settings: CustomerSettings) -> tuple[FieldCipher, BlindIndex]:
    assert settings.pii_key is not None and settings.blind_index_key is not None  # filled by the validator
    cipher = FieldCipher(
        settings.pii_key_id,
        parse_key(settings.pii_key.get_secret_value()),
        parse_old_keys(settings.pii_old_keys.get_secret_value()),
    )
    return cipher, BlindIndex(parse_key(settings.blind_index_key.get_secret_value()))


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
    )
    await run_until_signalled([EngineLifecycle(engine), _relay(settings, engine)], stop_event=stop_event)


def run() -> None:
    asyncio.run(serve(load_settings(CustomerSettings)))
