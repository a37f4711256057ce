"""The product capability, declared on the kit (``zhongtai product``, ``zhongtai relay --service
product``, ``zhongtai migrate product``): its settings, migrations, gRPC service and wiring. The
process itself is the kit's: :mod:`services.kit.service`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.product.v1 import operations_pb2, product_pb2, product_pb2_grpc
from services.kit import (
    TOPIC_CUSTOMER,
    CallerSettings,
    Capability,
    GroupProbe,
    InboxConsumer,
    ProducerLifecycle,
    Runtime,
    Wiring,
    make_producer,
    outbox_status_handler,
)
from services.product.api import ProductApi
from services.product.customers import CustomerDirectory
from services.product.replica import EligibilityReplica, ReplicaFreshness
from services.product.usecases import ProductUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
#: Its outbox status (ops:admin), served by the kit (ADR 0039).
OPERATIONS_NAME = operations_pb2.DESCRIPTOR.services_by_name["ProductOperationsService"].full_name


class ProductSettings(CallerSettings):
    """``ZT_`` settings of the product service (on top of the shared ones and the ``ZT_SERVICE_*``
    ones of its own token, :class:`services.kit.clients.CallerSettings`)."""

    service_name: str = "product"
    #: Overall budget of one customer lookup, retries included (ZT_CUSTOMER_DEADLINE_S).
    customer_deadline_s: float = Field(2.0, gt=0, le=60)
    #: The product service's own client id and scopes when it calls other services.
    service_client_id: str = "zhongtai-product"
    service_token_scopes: str = "customers:read"  # noqa: S105 - scope names, not a secret
    #: CheckEligibility answers from the product's replica of the customers' eligibility facts
    #: when it is caught up and can decide (ADR 0054); false: it always asks the customer service.
    product_eligibility_replica: bool = True
    #: The replica's consumer group on the customer topic (``ZT_KAFKA_TOPIC_PREFIX`` applied).
    product_replica_group_id: str = Field("product-eligibility", min_length=1, max_length=200)
    #: The replica answers only while it is known to hold every customer event the broker held
    #: at most this long ago (ZT_PRODUCT_REPLICA_MAX_STALENESS_S; ADR 0054 on the choice).
    product_replica_max_staleness_s: float = Field(1.5, gt=0, le=60)
    #: How often the group's committed offsets are compared with the topic's end.
    product_replica_probe_interval_s: float = Field(0.25, gt=0, le=10)

    @property
    def replica_group_id(self) -> str:
        """The group on the broker: the prefix namespaces it (and its ``<group>.dlq``)."""
        return self.kafka_topic_prefix + self.product_replica_group_id


def eligibility_replica(settings: ProductSettings, engine: AsyncEngine) -> tuple[ReplicaFreshness, list[Any]]:
    """The replica's consumer (the kit's inbox consumer with :class:`EligibilityReplica` as its
    projection; its own dead-letter producer) and its freshness probe, as components that start
    after the server serves: the product serves (asking the customer service) while they join.
    Readiness does not follow this consumer: without it the product still answers, by the lookup."""
    s = settings
    producer = make_producer(s.kafka_bootstrap_servers, client_id=f"{s.kafka_client_id}-replica")
    consumer = InboxConsumer(
        engine=engine, bootstrap_servers=s.kafka_bootstrap_servers, group_id=s.replica_group_id,
        topics=[s.kafka_topic_prefix + TOPIC_CUSTOMER], projection=EligibilityReplica(), dlq_producer=producer,
        client_id=f"{s.kafka_client_id}-replica",
    )  # fmt: skip
    probe = GroupProbe(
        s.kafka_bootstrap_servers, s.replica_group_id, [s.kafka_topic_prefix + TOPIC_CUSTOMER],
        timeout_s=s.product_replica_max_staleness_s,
    )  # fmt: skip
    freshness = ReplicaFreshness(
        probe, max_staleness_s=s.product_replica_max_staleness_s, probe_interval_s=s.product_replica_probe_interval_s
    )
    return freshness, [ProducerLifecycle(producer), consumer, freshness]


async def wire(runtime: Runtime[ProductSettings]) -> Wiring:
    settings = runtime.settings
    customers = CustomerDirectory(
        settings.customer_target, settings.service_tokens(), deadline_s=settings.customer_deadline_s
    )
    freshness, replica = (
        eligibility_replica(settings, runtime.engine) if settings.product_eligibility_replica else (None, [])
    )
    usecases = ProductUseCases(runtime.engine, customers, after_commit=runtime.after_commit, replica=freshness)
    servicer = ProductApi(usecases)
    outbox = outbox_status_handler(runtime.engine, OPERATIONS_NAME, "product")

    def register(server: grpc.aio.Server) -> None:
        product_pb2_grpc.add_ProductServiceServicer_to_server(servicer, server)
        server.add_generic_rpc_handlers((outbox,))

    return Wiring(register=register, components=[customers], after_serving=replica)


CAPABILITY = Capability(
    name="product",
    settings=ProductSettings,
    migrations=MIGRATIONS,
    grpc_services=[SERVICE_NAME, OPERATIONS_NAME],
    wire=wire,
)
serve, migrate, relay, run = CAPABILITY.commands()
