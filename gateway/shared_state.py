"""What gateway replicas share: Idempotency-Key records (ADR 0022) and quota buckets (ADR 0023).

Built from the settings: ``ZT_IDEMPOTENCY_STORE=database`` puts the records in the gateway's own
database (``ZT_DATABASE_URL``), ``ZT_QUOTA_REDIS_URL`` puts the buckets in Redis; without them
each replica keeps its own in memory (one gateway).
"""

from __future__ import annotations

from gateway.idempotency import IdempotencyStore, SqlIdempotencyStore
from gateway.quotas import Limit, QuotaLimiter, SharedQuotaLimiter
from gateway.settings import GatewaySettings
from services.kit import Unavailable, create_engine, is_infrastructure_error
from services.kit.logging import get_logger

log = get_logger("zhongtai.gateway")


def build_quotas(settings: GatewaySettings) -> QuotaLimiter | SharedQuotaLimiter:
    limits = {
        "reads": Limit(settings.quota_reads_rps, settings.quota_reads_burst),
        "writes": Limit(settings.quota_writes_rps, settings.quota_writes_burst),
        "admin": Limit(settings.quota_admin_rps, settings.quota_admin_burst),
    }
    local = QuotaLimiter(limits, max_clients=settings.quota_max_clients)
    if not settings.quota_redis_url:
        return local
    return SharedQuotaLimiter(
        limits, settings.quota_redis_url, timeout_s=settings.quota_redis_timeout_s, fallback=local
    )


def build_idempotency(settings: GatewaySettings) -> IdempotencyStore | SqlIdempotencyStore:
    if settings.idempotency_store == "memory":
        return IdempotencyStore(ttl_s=settings.idempotency_ttl_s, max_entries=settings.idempotency_max_entries)
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    return SqlIdempotencyStore(engine, ttl_s=settings.idempotency_ttl_s)


def unavailable_store(exc: Exception) -> Exception:
    """The idempotency store failed: UNAVAILABLE (503, retry with the same key) when it is an
    infrastructure fault (the database is down), else the error itself (a 500, logged)."""
    if not is_infrastructure_error(exc):
        return exc
    log.warning("idempotency store unavailable", error=type(exc).__name__)
    return Unavailable("the idempotency store is unavailable; retry with the same key", reason="DATABASE_UNAVAILABLE")
