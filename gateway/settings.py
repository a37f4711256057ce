"""Gateway settings (environment, prefix ``ZT_``), on top of the kit's :class:`ServiceSettings`."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from services.kit.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Everything the HTTP edge needs; every value is overridable with ``ZT_<NAME>``."""

    service_name: str = "gateway"

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    #: ASGI server: uvicorn (with uvloop and httptools) won the sixth-round benchmark against the
    #: real customer service (docs/perf/gateway.md, ADR 0007); granian stays selectable.
    http_server: Literal["granian", "uvicorn"] = "uvicorn"
    #: Event loop of the gateway process: uvloop (when installed) or the standard asyncio one.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    #: Extra backends by capability (the second part of the proto package, ``bank.<capability>.v1``),
    #: JSON, e.g. ``{"loans": "127.0.0.1:50061"}``. customer/product/datahub come from their targets.
    backends: dict[str, str] = Field(default_factory=dict)

    #: Deadline of a backend call when the client asks for none.
    default_timeout_s: float = Field(5.0, gt=0, le=300)
    #: Upper bound on what a client may ask with ``X-Timeout-Ms`` / ``grpc-timeout``.
    max_timeout_s: float = Field(30.0, gt=0, le=600)
    #: Attempts of an idempotent (GET) call that fails with UNAVAILABLE (1 = no retry).
    retry_attempts: int = Field(3, ge=1, le=10)
    retry_backoff_s: float = Field(0.05, ge=0, le=5)
    #: How long a call waits for a backend whose connection is not READY (never beyond the
    #: call's deadline) before it answers 503 UNAVAILABLE (reason ``BACKEND_UNAVAILABLE``)
    #: without sending (ADR 0009). A backend that is back is used as soon as its channel
    #: reconnects (within ~0.4 s: the kit's reconnect back-off); one that stays down costs a
    #: request this long, not its whole deadline. ``0`` sends at once, whatever the channel's
    #: state (gRPC then fails fast while it is in reconnect back-off).
    gateway_connect_wait_s: float = Field(1.0, ge=0, le=30)

    #: Request bodies above this many bytes get 413.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    #: Token buckets per client and route group: sustained requests/second and burst.
    #: One Python gRPC replica serves roughly 1-2k small requests/s; one client gets a few percent.
    quota_reads_rps: float = Field(50.0, gt=0)
    quota_reads_burst: int = Field(100, ge=1)
    quota_writes_rps: float = Field(20.0, gt=0)
    quota_writes_burst: int = Field(40, ge=1)
    quota_admin_rps: float = Field(5.0, gt=0)
    quota_admin_burst: int = Field(10, ge=1)
    #: Clients tracked at once (least recently seen are forgotten first).
    quota_max_clients: int = Field(10_000, ge=1)
    #: Redis holding the buckets every gateway replica shares (``redis://host:6379/0``, ADR 0023);
    #: empty: each replica keeps its own (one gateway, or a per-replica limit on purpose).
    quota_redis_url: str = ""
    #: How long a quota check waits for Redis before the replica uses its own bucket for 1 s.
    quota_redis_timeout_s: float = Field(0.1, gt=0, le=5)

    #: CORS allow-list: exact origins, comma-separated or JSON list ("*" is refused in prod).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    #: Where Idempotency-Key records live (ADR 0022): ``memory`` (per replica, bounded by
    #: ``ZT_IDEMPOTENCY_MAX_ENTRIES``) or ``database`` (the table ``gateway_idempotency`` in
    #: ``ZT_DATABASE_URL``, shared by every replica: PostgreSQL when several run), and how long
    #: the first response is kept.
    idempotency_store: Literal["memory", "database"] = "memory"
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)
    idempotency_max_entries: int = Field(10_000, ge=1)

    #: Serve the staff console from this directory (a build of ``console/``) instead of the one
    #: packaged with the gateway (``gateway/static/console``); empty: the packaged one.
    console_dir: str = ""
    #: The staff console's OIDC sign-in (authorization code + PKCE, a public client: no secret;
    #: docs/console.md): the provider's authorization and token endpoints, the console's client
    #: id and the scopes it asks for. Unset: the console offers no OIDC sign-in. The token
    #: endpoint's origin is added to the console's CSP ``connect-src``.
    console_oidc_authorization_endpoint: str = ""
    console_oidc_token_endpoint: str = ""
    console_oidc_client_id: str = ""
    console_oidc_scope: str = "openid views:read customers:read products:read subscriptions:read"

    #: Per-request JSON access log line (method, route, status, duration, client id).
    access_log: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().startswith("["):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _gateway_rules(self) -> GatewaySettings:
        if self.default_timeout_s > self.max_timeout_s:
            raise ValueError("ZT_DEFAULT_TIMEOUT_S must not exceed ZT_MAX_TIMEOUT_S")
        if self.environment == "prod" and "*" in self.cors_origins:
            raise ValueError("ZT_CORS_ORIGINS must list exact origins in prod, not '*'")
        _check_oidc(self)
        return self

    def backend_targets(self) -> dict[str, str]:
        """Capability → gRPC target."""
        return {
            "customer": self.customer_target,
            "product": self.product_target,
            "datahub": self.datahub_target,
            **self.backends,
        }


def _check_oidc(s: GatewaySettings) -> None:
    """The console's OIDC settings: all three or none; https endpoints (http only on loopback)."""
    oidc = {
        "ZT_CONSOLE_OIDC_AUTHORIZATION_ENDPOINT": s.console_oidc_authorization_endpoint,
        "ZT_CONSOLE_OIDC_TOKEN_ENDPOINT": s.console_oidc_token_endpoint,
        "ZT_CONSOLE_OIDC_CLIENT_ID": s.console_oidc_client_id,
    }
    if not any(oidc.values()):
        return
    if missing := [name for name, value in oidc.items() if not value]:
        raise ValueError(f"{', '.join(missing)} must be set too (the console's OIDC sign-in needs all three)")
    for name in list(oidc)[:2]:
        url = urlsplit(oidc[name])
        loopback = url.hostname in ("localhost", "127.0.0.1", "::1")
        if (url.scheme != "https" and not (url.scheme == "http" and loopback)) or not url.hostname:
            raise ValueError(f"{name} must be an https URL (http only on localhost)")
