"""The data hub process: inbox consumer -> projection -> views (gRPC + bank.customer-view.v1).

zhongtai data_hub                      # serve until SIGTERM
python -m services.data_hub.rebuild    # replay from offset 0 into the idle table set, swap
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import AIOKafkaProducer
from pydantic import Field, field_validator

from bank.datahub.v1 import datahub_pb2, datahub_pb2_grpc
from services.data_hub import store
from services.data_hub.api import CustomerViewApi, refresh_segments
from services.data_hub.customers import KnownCustomers
from services.data_hub.domain import Rules
from services.data_hub.projector import HubProjection, ViewWorker
from services.kit.auth import TokenVerifier
from services.kit.clients import CallerSettings
from services.kit.config import load_settings
from services.kit.consumer import InboxConsumer
from services.kit.db import EngineLifecycle, create_engine
from services.kit.events import TOPIC_CUSTOMER, TOPIC_PRODUCT, TOPIC_SUBSCRIPTION
from services.kit.grpc_server import GrpcServer
from services.kit.kafka import ensure_topics, make_producer
from services.kit.lifecycle import cancel_and_wait, run_until_signalled
from services.kit.logging import configure_logging, get_logger
from services.kit.migrations import upgrade
from services.kit.telemetry import setup_telemetry

MIGRATIONS = Path(__file__).parent / "migrations"
TOPICS = (TOPIC_CUSTOMER, TOPIC_PRODUCT, TOPIC_SUBSCRIPTION)
log = get_logger("zhongtai.data_hub")


class DataHubSettings(CallerSettings):
    service_name: str = "data_hub"
    datahub_group_id: str = "data-hub"
    #: JSON object overriding fields of services.data_hub.domain.Rules, e.g. {"dormant_days": 120}.
    datahub_rules: str = ""
    datahub_max_records: int = Field(500, ge=1, le=10_000)
    datahub_max_attempts: int = Field(3, ge=1, le=20)
    datahub_view_batch_size: int = Field(500, ge=1, le=10_000)
    datahub_view_debounce_s: float = Field(0.002, ge=0, le=10)
    #: A consumer batch touching at most this many customers renders their views in its own
    #: transaction (live traffic: served at commit); bigger ones (backlog) leave them to the
    #: view worker, which coalesces. 0 = always the worker.
    datahub_inline_render_max: int = Field(100, ge=0, le=10_000)
    #: A consumer batch of at most this many records traces each event (a child span of its
    #: producer's: one trace from the channel's request to the view); a bigger one (a backlog,
    #: a replay) gets one span for the batch, linked to its events' producer spans.
    datahub_trace_each_max: int = Field(100, ge=0, le=10_000)
    #: Stage the next consumer batch (inbox lookups, fold) while the previous one is written and
    #: committed, so the hub's CPU and the database's work overlap (the projector folds in memory
    #: and writes in the batch's before-commit hook, which runs after the previous commit).
    datahub_overlap_writes: bool = True
    #: While the consumer is more than ``datahub_backlog_records`` behind (catching up after a
    #: deploy or an outage, a replay), the view worker renders at most every
    #: ``datahub_backlog_render_interval_s`` so the consumer gets the CPU; live traffic is not
    #: affected. 0 disables the throttle.
    datahub_backlog_records: int = Field(5_000, ge=0)
    datahub_backlog_render_interval_s: float = Field(5.0, ge=0, le=60)
    datahub_publish_views: bool = True
    #: Static membership of the consumer group (Kafka's ``group.instance.id``): unique per
    #: replica and stable across its restarts (the pod name). A member restarted with it gets its
    #: partitions back at once; without it, only after the dead member's session times out.
    datahub_group_instance_id: str = Field("", max_length=249, pattern=r"^[A-Za-z0-9._-]*$")
    #: How long a member that stopped heart-beating keeps its partitions (docs/adr/0010).
    datahub_session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)
    #: Recompute RFM segments every N seconds (0 = only on RefreshSegments).
    datahub_refresh_interval_s: float = Field(0, ge=0, le=7 * 86_400)
    #: A view miss asks the customer service whether the customer exists (ADR 0008): the budget
    #: of that lookup, retries included, shortened to the incoming call's remaining deadline.
    datahub_customer_deadline_s: float = Field(0.5, gt=0, le=60)
    #: The hub's own client id and scopes for that call (``ZT_SERVICE_*``, see CallerSettings).
    service_client_id: str = "zhongtai-data-hub"
    service_token_scopes: str = "customers:read"  # noqa: S105 - scope names, not a secret

    @field_validator("datahub_rules")
    @classmethod
    def _rules_parse(cls, value: str) -> str:
        Rules.from_json(value)  # raises ValueError with the bad field named
        return value

    @property
    def rules(self) -> Rules:
        return Rules.from_json(self.datahub_rules)

    @property
    def source_topics(self) -> tuple[str, ...]:
        """The topics the hub consumes, as named on the broker (``ZT_KAFKA_TOPIC_PREFIX`` applied)."""
        return tuple(self.kafka_topic_prefix + t for t in TOPICS)

    @property
    def group_id(self) -> str:
        """The consumer group on the broker: the prefix namespaces it too (and so the DLQ,
        ``<group>.dlq``), or two environments sharing a cluster with the default ``data-hub``
        would join one group and split each other's partitions."""
        return self.kafka_topic_prefix + self.datahub_group_id


async def migrate() -> None:
    settings = load_settings(DataHubSettings)
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine, MIGRATIONS)
    finally:
        await engine.dispose()


class ProducerLifecycle:
    """Starts/stops a shared producer (DLQ + view topic)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()


class PeriodicRefresh:
    """RefreshSegments on a timer (off unless ZT_DATAHUB_REFRESH_INTERVAL_S > 0)."""

    def __init__(self, settings: DataHubSettings, engine: object, worker: ViewWorker) -> None:
        self._settings, self._engine, self._worker = settings, engine, worker
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._settings.datahub_refresh_interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="data-hub-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.datahub_refresh_interval_s)
            try:
                await refresh_segments(self._engine, self._settings.rules, self._worker, store.now_us())  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("periodic refresh failed", error=type(exc).__name__)


async def serve(settings: DataHubSettings, stop_event: asyncio.Event | None = None) -> None:
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
    rules = settings.rules
    producer = make_producer(settings.kafka_bootstrap_servers, client_id=settings.kafka_client_id)
    worker = ViewWorker(
        engine,
        producer if settings.datahub_publish_views else None,
        rules,
        batch_size=settings.datahub_view_batch_size,
        debounce_s=settings.datahub_view_debounce_s,
        topic_prefix=settings.kafka_topic_prefix,
        backlog=lambda: 0 < settings.datahub_backlog_records < consumer.lag,
        backlog_pause_s=settings.datahub_backlog_render_interval_s,
    )
    projection = HubProjection(on_commit=worker.wake, rules=rules, inline_render_max=settings.datahub_inline_render_max)
    consumer = InboxConsumer(
        engine=engine,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        topics=settings.source_topics,
        projection=projection,
        dlq_producer=producer,
        max_attempts=settings.datahub_max_attempts,
        max_records=settings.datahub_max_records,
        client_id=settings.kafka_client_id,
        trace_each_max=settings.datahub_trace_each_max,
        overlap_writes=settings.datahub_overlap_writes,
        # Readiness follows consumption: NOT_SERVING while a failure is waited out (liveness not).
        on_state=lambda consuming, reason: server.set_ready(consuming, reason),
        group_instance_id=settings.datahub_group_instance_id or None,
        session_timeout_ms=settings.datahub_session_timeout_ms,
    )
    customers = KnownCustomers(
        settings.customer_target, settings.service_tokens(), deadline_s=settings.datahub_customer_deadline_s
    )
    servicer = CustomerViewApi(engine=engine, rules=rules, worker=worker, customers=customers)
    server = GrpcServer(
        host=settings.grpc_host,
        port=settings.grpc_port,
        register=lambda s: datahub_pb2_grpc.add_CustomerViewServiceServicer_to_server(servicer, s),
        service_names=[datahub_pb2.DESCRIPTOR.services_by_name["CustomerViewService"].full_name],
        verifier=TokenVerifier.from_settings(settings),
        max_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        shutdown_grace_s=settings.grpc_shutdown_grace_s,
    )
    # Start in order, stop in reverse: the server drains first, then consuming stops (its last
    # batch commits), then the worker, the producer and the engine.
    await run_until_signalled(
        [
            EngineLifecycle(engine),
            ProducerLifecycle(producer),
            worker,
            consumer,
            PeriodicRefresh(settings, engine, worker),
            customers,
            server,
        ],
        stop_event=stop_event,
    )


def run() -> None:
    asyncio.run(serve(load_settings(DataHubSettings)))
