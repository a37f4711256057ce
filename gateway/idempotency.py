"""``Idempotency-Key`` handling at the edge.

The key is copied into the request's ``request_id`` (AIP-155), so the service's own
deduplication makes a replay safe across gateway replicas and restarts. The gateway adds,
per replica, a bounded LRU with a TTL keyed by (client id, key) holding a fingerprint of the
request (the parsed message, serialized deterministically, request_id cleared, plus the RPC)
and the first response:

- same key, same request → the first response again (``Idempotent-Replayed: true``), without
  calling the service; a concurrent duplicate waits for the first to finish;
- same key, different request → 409 ALREADY_EXISTS (reason IDEMPOTENCY_KEY_REUSED);
- a failure the client may retry (5xx, 429) is not remembered: the key can be used again.

A multi-replica deployment that needs the 409 check across replicas must move this table to a
shared store (e.g. Redis/PostgreSQL keyed the same way); replays are already safe without it
because the services deduplicate on request_id.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import Message

from gateway.routing import Route


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Entry:
    fingerprint: str
    expires: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    response: StoredResponse | None = None


class KeyReused(Exception):
    """The key was first used for a different request."""


def fingerprint(route: Route, request: Message) -> str:
    """What makes two requests 'the same': the RPC and the parsed request minus request_id."""
    copy = request
    if route.request_id_field is not None:
        copy = type(request)()
        copy.CopyFrom(request)
        copy.ClearField(route.request_id_field.name)  # type: ignore[arg-type]
    digest = hashlib.sha256(route.full_method.encode())
    digest.update(copy.SerializeToString(deterministic=True))
    return digest.hexdigest()


class IdempotencyStore:
    """Bounded, TTL'd, per-replica table of (client, key) → fingerprint + first response."""

    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def begin(self, client_id: str, key: str, print_: str, *, wait_s: float) -> StoredResponse | None:
        """None: go ahead (then :meth:`finish` or :meth:`abandon`); else the stored response."""
        slot = (client_id, key)
        while True:
            now = self._clock()
            entry = self._entries.get(slot)
            if entry is not None and entry.expires <= now and entry.done.is_set():
                del self._entries[slot]
                entry = None
            if entry is None:
                self._entries[slot] = _Entry(print_, now + self._ttl)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
                return None
            self._entries.move_to_end(slot)
            if entry.fingerprint != print_:
                raise KeyReused(key)
            if entry.response is not None:
                return entry.response
            # The first request with this key is still running: wait for its outcome.
            async with asyncio.timeout(wait_s):
                await entry.done.wait()

    def finish(self, client_id: str, key: str, response: StoredResponse) -> None:
        entry = self._entries.get((client_id, key))
        if entry is not None:
            entry.response = response
            entry.done.set()

    def abandon(self, client_id: str, key: str) -> None:
        """Forget a key whose request failed in a retriable way."""
        entry = self._entries.pop((client_id, key), None)
        if entry is not None:
            entry.done.set()
