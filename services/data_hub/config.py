"""Configuration of the data hub: the kit's settings, its own token's (``ZT_SERVICE_*``) and the
hub's ``ZT_DATAHUB_*`` ones (documented on each field; the README lists the common ones)."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.data_hub.domain import Rules
from services.kit import TOPIC_CUSTOMER, TOPIC_PRODUCT, TOPIC_SUBSCRIPTION, CallerSettings

#: The topics the hub consumes (logical names; ``ZT_KAFKA_TOPIC_PREFIX`` applies on the broker).
TOPICS = (TOPIC_CUSTOMER, TOPIC_PRODUCT, TOPIC_SUBSCRIPTION)


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
    #: committed, so the hub's CPU and the database's work overlap (the projection folds in memory
    #: at stage time and writes in its apply step, which runs after the previous commit).
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
