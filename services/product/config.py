"""Settings of the product service: the kit's shared ones, its own token's (``ZT_SERVICE_*``)
and the product's (documented on each field; services/product/README.md lists them)."""

from __future__ import annotations

from pydantic import Field

from services.kit import CallerSettings


class ProductSettings(CallerSettings):
    """``ZT_`` settings of the product service (on top of the shared ones and the ``ZT_SERVICE_*``
    ones of its own token, :class:`services.kit.clients.CallerSettings`)."""

    service_name: str = "product"
    #: Overall budget of one customer lookup, retries included (ZT_CUSTOMER_DEADLINE_S).
    customer_deadline_s: float = Field(2.0, gt=0, le=60)
    #: Customer lookups out at once at most; lookups asked meanwhile wait and then go together in
    #: one call (ZT_CUSTOMER_LOOKUPS_IN_FLIGHT; ADR 0058).
    customer_lookups_in_flight: int = Field(2, ge=1, le=64)
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
