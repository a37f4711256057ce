"""Configuration from the environment (12-factor): one prefix, ``ZT_``, validated at start-up.

Every service subclasses :class:`ServiceSettings`; a bad value stops the process with one line
per offending variable (see :func:`load_settings`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ZT_"

#: A topic namespace: empty, or Kafka topic characters ending in a dot (``uat.``, ``t1a2b3.``).
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]+\.")

#: Default local ports (ARCHITECTURE §6).
DEFAULT_PORTS = {"customer": 50051, "product": 50052, "data_hub": 50053, "gateway": 8080}


class ConfigError(SystemExit):
    """Start-up configuration is invalid; the message names every bad variable."""


class ServiceSettings(BaseSettings):
    """Settings every component shares."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)

    service_name: str = "zhongtai"
    environment: Literal["dev", "test", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    database_url: str = ""
    database_pool_size: int = Field(10, ge=1, le=200)
    #: A span per SQL statement (OpenTelemetry's SQLAlchemy tracer) and the pool's
    #: ``db.client.connections.usage``: ~0.5 ms of CPU per statement on a small VM, more than
    #: the statement itself, so off unless asked for (ADR 0025; docs/perf/services.md).
    db_trace_statements: bool = False

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_partitions: int = Field(3, ge=1, le=1000)
    kafka_replication_factor: int = Field(1, ge=1, le=7)
    kafka_client_id: str = ""
    #: Namespace of every topic (and the data hub's consumer group) when several environments
    #: share one Kafka cluster: ``bank.customer.v1`` is ``<prefix>bank.customer.v1`` on the
    #: broker. The contract and the outbox rows keep the logical names; the prefix is applied
    #: only at the Kafka boundary (``ensure_topics``, the relay, the hub's consumer and producer).
    kafka_topic_prefix: str = Field("", max_length=100)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(0, ge=0, le=65535)
    grpc_max_concurrent_rpcs: int = Field(256, ge=1, le=100_000)
    grpc_shutdown_grace_s: float = Field(10.0, ge=0, le=300)
    metrics_port: int | None = Field(None, ge=1, le=65535)

    otel_console: bool = False

    #: CPython's cyclic garbage collector: allocations between two collections of its youngest
    #: generation (``gc.set_threshold``'s first value), set once the process has started (the
    #: kit's lifecycle, beside its freeze of the start-up heap, ADR 0032). CPython's own 700 here;
    #: the data hub's consumer, which holds batches of thousands of events, uses 50,000 (ADR 0069).
    gc_young_threshold: int = Field(700, ge=100, le=10_000_000)

    auth_hs256_secret: SecretStr | None = None
    auth_jwks_file: Path | None = None
    auth_issuer: str = "zhongtai-dev"
    auth_audience: str = "zhongtai"
    auth_leeway_s: int = Field(30, ge=0, le=300)
    #: Verified bearer tokens remembered (by exact token string, until they expire) so a
    #: client's repeated calls skip JWT verification (~0.2 ms of CPU per call); 0 verifies
    #: every call. Gateway and services alike: the token the gateway forwards is checked again.
    token_cache_size: int = Field(10_000, ge=0)

    customer_target: str = "127.0.0.1:50051"
    product_target: str = "127.0.0.1:50052"
    datahub_target: str = "127.0.0.1:50053"

    outbox_relay_enabled: bool = True
    outbox_poll_interval_s: float = Field(0.5, gt=0, le=60)
    outbox_batch_size: int = Field(500, ge=1, le=10_000)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("kafka_topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        if value and not _TOPIC_PREFIX.fullmatch(value):
            raise ValueError("must be empty or letters, digits, '.', '_', '-' ending in '.' (e.g. 'uat.')")
        return value

    @field_validator("auth_hs256_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (HS256 needs a 256-bit secret)")
        return value

    @model_validator(mode="after")
    def _defaults_and_prod_rules(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///var/{self.service_name}.db"
        if not self.grpc_port:
            self.grpc_port = DEFAULT_PORTS.get(self.service_name, 0)
        if not self.kafka_client_id:
            self.kafka_client_id = f"zhongtai-{self.service_name}"
        if self.environment == "prod" and self.auth_jwks_file is None:
            raise ValueError("ZT_AUTH_JWKS_FILE is required when ZT_ENVIRONMENT=prod (HS256 is for dev only)")
        return self


S = TypeVar("S", bound=BaseSettings)


def format_validation_error(exc: ValidationError, prefix: str = ENV_PREFIX) -> str:
    """One line per bad variable, named as the operator sets it."""
    lines = ["invalid configuration:"]
    for err in exc.errors():
        loc = "_".join(str(p) for p in err["loc"]).upper()
        name = f"{prefix}{loc}" if loc else "(settings)"
        lines.append(f"  {name}: {err['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment; exit with a clear message when a value is bad."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        print(format_validation_error(exc), file=sys.stderr)
        raise ConfigError(2) from exc
