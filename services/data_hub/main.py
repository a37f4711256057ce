"""The data hub capability, declared on the kit (``zhongtai data_hub``): inbox consumer ->
projection -> views, served over gRPC and published to ``bank.customer-view.v1``. The process
(engine, migrations, topics, server, health, signals, shutdown order) is the kit's:
:mod:`services.kit.service`. ``python -m services.data_hub.rebuild`` replays into the idle set.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from bank.datahub.v1 import datahub_pb2
from services.data_hub.api import CustomerViewApi, PeriodicRefresh
from services.data_hub.config import TOPICS, DataHubSettings
from services.data_hub.customers import KnownCustomers
from services.data_hub.operations import OPERATIONS_NAME, register_services, wire_operations
from services.data_hub.projector import HubProjection, ViewWorker
from services.kit import Capability, InboxConsumer, ProducerLifecycle, Runtime, Wiring, make_producer

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = datahub_pb2.DESCRIPTOR.services_by_name["CustomerViewService"].full_name

__all__ = ["CAPABILITY", "MIGRATIONS", "TOPICS", "DataHubSettings", "migrate", "run", "serve"]


async def wire(runtime: Runtime[DataHubSettings]) -> Wiring:
    s, engine, rules = runtime.settings, runtime.engine, runtime.settings.rules
    producer = make_producer(s.kafka_bootstrap_servers, client_id=s.kafka_client_id)  # DLQ + view topic
    worker = ViewWorker(
        engine, producer if s.datahub_publish_views else None, rules,
        batch_size=s.datahub_view_batch_size, debounce_s=s.datahub_view_debounce_s, topic_prefix=s.kafka_topic_prefix,
        backlog=lambda: 0 < s.datahub_backlog_records < consumer.lag,
        backlog_pause_s=s.datahub_backlog_render_interval_s,
    )  # fmt: skip
    projection = HubProjection(on_commit=worker.wake, rules=rules, inline_render_max=s.datahub_inline_render_max,
                               feed_topics=s.feed_topics)  # + the customers' event feed, ADR 0062  # fmt: skip
    consumer = InboxConsumer(
        engine=engine, bootstrap_servers=s.kafka_bootstrap_servers, group_id=s.group_id, topics=s.source_topics,
        projection=projection,
        dlq_producer=producer, max_attempts=s.datahub_max_attempts, max_records=s.datahub_max_records,
        client_id=s.kafka_client_id, trace_each_max=s.datahub_trace_each_max, overlap_writes=s.datahub_overlap_writes,
        on_state=runtime.set_ready,  # readiness follows consumption (ADR 0010); liveness does not
        group_instance_id=s.datahub_group_instance_id or None, session_timeout_ms=s.datahub_session_timeout_ms,
        linger_ms=s.datahub_linger_ms, stall_after_s=s.datahub_stall_after_s, record_versioned=False,  # ADR 0049
    )  # fmt: skip
    customers = KnownCustomers(s.customer_target, s.service_tokens(), deadline_s=s.datahub_customer_deadline_s)
    servicer = CustomerViewApi(engine=engine, rules=rules, worker=worker, customers=customers)
    refresh = PeriodicRefresh(s.datahub_refresh_interval_s, engine, rules, worker)
    operations, index = wire_operations(s, engine, projection, consumer)  # status, dead letters (ops:admin)
    # Views are read from the database: the server serves them first, then these start in this
    # order (ADR 0035: a restarted hub serves before its Kafka clients connect, even with the
    # broker down); stopped in reverse after the server has drained: consuming stops (its last
    # batch commits), then the worker, then the producer.
    return Wiring(
        register=partial(register_services, views=servicer, operations=operations),
        after_serving=[ProducerLifecycle(producer), worker, consumer, customers, refresh, index],
    )


CAPABILITY = Capability(
    name="data_hub", settings=DataHubSettings, migrations=MIGRATIONS, grpc_services=[SERVICE_NAME, OPERATIONS_NAME],
    wire=wire, writes_outbox=False,
)  # fmt: skip
serve, migrate, relay, run = CAPABILITY.commands()
