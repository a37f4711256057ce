"""Token-bucket quotas per client (from the token) and per route group (reads, writes, admin).

In memory, per replica: the limits are per replica too, so a deployment's effective quota is
``replicas x limit``. The bucket table is bounded (least recently seen clients are forgotten,
which can only make a forgotten client's next burst more generous, never deny it wrongly).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


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


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds; never 0 (a client would hammer)."""
    return str(max(1, math.ceil(seconds)))
