"""Configuration of the data hub: the kit's settings, its own token's (``ZT_SERVICE_*``) and the
hub's ``ZT_DATAHUB_*`` ones (documented on each field; the README lists the common ones)."""

from __future__ import annotations

import dataclasses
import functools

from pydantic import Field, SecretStr, field_validator, model_validator

from services.data_hub import model
from services.data_hub.domain import Rules
from services.kit import (
    TOPIC_CUSTOMER,
    TOPIC_PRODUCT,
    TOPIC_SUBSCRIPTION,
    BlindIndex,
    CallerSettings,
    get_logger,
    parse_key,
)

log = get_logger("zhongtai.data_hub")

#: Documented, PUBLIC dev/test-only key of the operations audit chain (base64 of SHA-256 of
#: "zhongtai-dev-ops-audit-key"): used when ZT_DATAHUB_AUDIT_KEY is unset outside prod, refused in prod.
DEV_AUDIT_KEY = "hy6z7t9D3rhhjnIFRoWNq7RMfDxrlyaI0TXQ7QqLzm8="

#: The topics the hub consumes (logical names; ``ZT_KAFKA_TOPIC_PREFIX`` applies on the broker).
TOPICS = (TOPIC_CUSTOMER, TOPIC_PRODUCT, TOPIC_SUBSCRIPTION)


@functools.cache
def _load_model(path: str) -> model.ScoreModel | None:
    loaded = model.load(path)
    if loaded is None:
        log.warning("no trained scores: churn and offers come from the rules", model_path=path)
    else:
        log.info("trained scores loaded", model_path=path, model_version=loaded.version)
    return loaded


class DataHubSettings(CallerSettings):
    service_name: str = "data_hub"
    #: A catch-up batch keeps thousands of decoded events, fold rows and statements alive: at
    #: CPython's 700 the young collections walked them again and again, and at 50,000 still ~35
    #: times per 62,000 events of 10,000-record batches (~3.5 µs an event). Two batches in flight
    #: grow the young generation by ~420,000 objects at most: at 1,000,000 none is collected
    #: until they are freed (ADR 0069, wave 15).
    gc_young_threshold: int = Field(1_000_000, ge=100, le=10_000_000)
    datahub_group_id: str = "data-hub"
    #: JSON object overriding fields of services.data_hub.domain.Rules, e.g. {"dormant_days": 120}.
    datahub_rules: str = ""
    #: records a consumer batch takes (one transaction) when a backlog offers them (ADR 0067:
    #: 10,000 since wave 14, ~19 % less of the machine's CPU per event than 2,000)
    datahub_max_records: int = Field(10_000, ge=1, le=10_000)
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
    #: Live coalescing: the broker holds the consumer's fetch up to this long (or until a
    #: backlog's worth of records is there), so live events are applied several to a
    #: transaction; 0 = answer at once (each poll then carries one or two live events).
    datahub_linger_ms: int = Field(50, ge=0, le=1_000)
    #: While the consumer is more than ``datahub_backlog_records`` behind (catching up after a
    #: deploy or an outage, a replay), the view worker renders at most every
    #: ``datahub_backlog_render_interval_s`` so the consumer gets the CPU; live traffic is not
    #: affected. 0 disables the throttle.
    datahub_backlog_records: int = Field(5_000, ge=0)
    datahub_backlog_render_interval_s: float = Field(5.0, ge=0, le=60)
    datahub_publish_views: bool = True
    #: The trained scores' artifact (``zhongtai models train``), loaded at start-up: churn and
    #: offers are then scored by it and the view names its version; no file there = the rules
    #: score (logged); a file the hub cannot use stops start-up. Empty = the rules.
    datahub_model_path: str = ""
    #: Static membership of the consumer group (Kafka's ``group.instance.id``): unique per
    #: replica and stable across its restarts (the pod name). A member restarted with it gets its
    #: partitions back at once; without it, only after the dead member's session times out.
    datahub_group_instance_id: str = Field("", max_length=249, pattern=r"^[A-Za-z0-9._-]*$")
    #: How long a member that stopped heart-beating keeps its partitions (docs/adr/0010).
    datahub_session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)
    #: A consumer group of the hub that leaves records uncommitted without moving this long is
    #: said to be stalled (log, ``consumer.stalls``, readiness) and its consumer restarted
    #: (ADR 0046). 0 = not watched. Keep it above the session timeout (a dead member's wait).
    datahub_stall_after_s: float = Field(30.0, ge=0, le=3_600)
    #: Recompute RFM segments every N seconds (0 = only on RefreshSegments).
    datahub_refresh_interval_s: float = Field(0, ge=0, le=7 * 86_400)
    #: A view miss asks the customer service whether the customer exists (ADR 0008): the budget
    #: of that lookup, retries included, shortened to the incoming call's remaining deadline.
    datahub_customer_deadline_s: float = Field(0.5, gt=0, le=60)
    #: The hub's own client id and scopes for that call (``ZT_SERVICE_*``, see CallerSettings).
    service_client_id: str = "zhongtai-data-hub"
    service_token_scopes: str = "customers:read"  # noqa: S105 - scope names, not a secret
    #: base64 32-byte HMAC key of the operations audit chain (dead-letter reads, replays,
    #: quarantines): required in prod, the public dev key otherwise.
    datahub_audit_key: SecretStr | None = None

    @field_validator("datahub_rules")
    @classmethod
    def _rules_parse(cls, value: str) -> str:
        Rules.from_json(value)  # raises ValueError with the bad field named
        return value

    @field_validator("datahub_audit_key")
    @classmethod
    def _audit_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value(), name="ZT_DATAHUB_AUDIT_KEY")
        return value

    @model_validator(mode="after")
    def _audit_key(self) -> DataHubSettings:
        given = self.datahub_audit_key.get_secret_value() if self.datahub_audit_key is not None else None
        if self.environment == "prod" and given in (None, DEV_AUDIT_KEY):
            raise ValueError("ZT_DATAHUB_AUDIT_KEY is required (not the dev key) when ZT_ENVIRONMENT=prod")
        return self

    def audit_keyring(self) -> BlindIndex:
        """The operations audit chain's HMAC key."""
        key = self.datahub_audit_key.get_secret_value() if self.datahub_audit_key is not None else DEV_AUDIT_KEY
        return BlindIndex(parse_key(key, name="ZT_DATAHUB_AUDIT_KEY"))

    @property
    def dlq_topic(self) -> str:
        """The consumer's dead-letter topic (services.kit.dlq: ``<group>.dlq``)."""
        return f"{self.group_id}.dlq"

    @property
    def rules(self) -> Rules:
        """The rules, with the trained scores if their artifact is there (read once per process)."""
        return dataclasses.replace(Rules.from_json(self.datahub_rules), model=_load_model(self.datahub_model_path))

    @property
    def source_topics(self) -> tuple[str, ...]:
        """The topics the hub consumes, as named on the broker (``ZT_KAFKA_TOPIC_PREFIX`` applied)."""
        return tuple(self.kafka_topic_prefix + t for t in TOPICS)

    @property
    def feed_topics(self) -> frozenset[str]:
        """The topics whose events are listed in the customers' event feed (ADR 0040, 0062), as
        named on the broker: not the product catalogue's."""
        return frozenset(self.kafka_topic_prefix + t for t in (TOPIC_CUSTOMER, TOPIC_SUBSCRIPTION))

    @property
    def group_id(self) -> str:
        """The consumer group on the broker: the prefix namespaces it too (and so the DLQ,
        ``<group>.dlq``), or two environments sharing a cluster with the default ``data-hub``
        would join one group and split each other's partitions."""
        return self.kafka_topic_prefix + self.datahub_group_id
