"""Token-bucket quotas per client (from the token) and per route group (reads, writes, admin).

Two homes for the buckets (ADR 0023):

- :class:`QuotaLimiter`, in memory, per replica: the limits are per replica too, so a
  deployment's effective quota is ``replicas x limit``. The bucket table is bounded (least
  recently seen clients are forgotten, which can only make a forgotten client's next burst more
  generous, never deny it wrongly). One gateway (``make run``), or no Redis configured.
- :class:`SharedQuotaLimiter`, with ``ZT_QUOTA_REDIS_URL``: one bucket per (client, group) in
  Redis, refilled and taken atomically by a Lua script on Redis's own clock, so every replica
  draws from the same bucket (Envoy's global rate limit works the same way). When Redis does not
  answer (within ``ZT_QUOTA_REDIS_TIMEOUT_S``) the replica falls back to its own in-memory
  bucket for a second and logs it: quotas degrade to per replica, requests never fail for it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.kit.logging import get_logger

log = get_logger("zhongtai.gateway.quotas")


@dataclass(frozen=True)
class Limit:
    """Sustained rate (tokens/second) and burst (bucket size)."""

    rate: float
    burst: int


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class QuotaLimiter:
    """``take(client, group)`` → None when allowed, else the seconds to wait (for Retry-After)."""

    def __init__(
        self,
        limits: dict[str, Limit],
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._max = max_clients
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def limit(self, group: str) -> Limit | None:
        return self._limits.get(group)

    async def acquire(self, client_id: str, group: str) -> float | None:
        """:meth:`take` behind the interface :class:`SharedQuotaLimiter` also offers."""
        return self.take(client_id, group)

    async def close(self) -> None:
        return None

    def take(self, client_id: str, group: str) -> float | None:
        limit = self._limits.get(group)
        if limit is None:
            return None
        now = self._clock()
        key = (client_id, group)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(limit.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / limit.rate


#: Refill and take one token atomically; returns the seconds to wait as a string ("0": allowed).
#: KEYS[1] the bucket; ARGV rate (tokens/s), burst. Redis's TIME is the one clock of all replicas.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class SharedQuotaLimiter:
    """The same buckets in Redis, shared by every gateway replica; ``await take(...)``."""

    def __init__(
        self,
        limits: dict[str, Limit],
        redis_url: str,
        *,
        timeout_s: float = 0.1,
        fallback: QuotaLimiter | None = None,
        prefix: str = "zt:quota:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as aioredis

        self._limits = limits
        self._prefix = prefix
        self._clock = clock
        self._redis: Any = aioredis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        self._script: Any = self._redis.register_script(_TAKE)
        self._fallback = fallback or QuotaLimiter(limits)
        self._local_until = 0.0  # after a Redis failure, local buckets until then

    def limit(self, group: str) -> Limit | None:
        return self._limits.get(group)

    async def acquire(self, client_id: str, group: str) -> float | None:
        """None when allowed, else the seconds to wait (for Retry-After)."""
        limit = self._limits.get(group)
        if limit is None:
            return None
        if self._clock() < self._local_until:
            return self._fallback.take(client_id, group)
        try:
            key = f"{self._prefix}{client_id}:{group}"
            wait = float(await self._script(keys=[key], args=[limit.rate, limit.burst]))
        except Exception as exc:  # any Redis failure: degrade to per-replica buckets, never a 5xx
            if self._clock() >= self._local_until:
                log.warning("quota store unavailable: per-replica quotas for 1 s", error=type(exc).__name__)
            self._local_until = self._clock() + 1.0
            return self._fallback.take(client_id, group)
        return wait if wait > 0 else None

    async def close(self) -> None:
        await self._redis.aclose()


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; never 0 (a client would hammer)."""
    return str(max(1, math.ceil(seconds)))
