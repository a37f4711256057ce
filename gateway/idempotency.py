"""``Idempotency-Key`` handling at the edge.

The key is copied into the request's ``request_id`` (AIP-155), so the service's own
deduplication makes a replay safe across gateway replicas and restarts. The gateway adds a
table keyed by (client id, key) holding a fingerprint of the request (the parsed message,
serialized deterministically, request_id cleared, plus the RPC) and the first response:

- same key, same request → the first response again (``Idempotent-Replayed: true``), without
  calling the service; a concurrent duplicate waits for the first to finish;
- same key, different request → 409 ALREADY_EXISTS (reason IDEMPOTENCY_KEY_REUSED);
- a failure the client may retry (5xx, 429) is not remembered: the key can be used again.

Two stores (``ZT_IDEMPOTENCY_STORE``, ADR 0022): ``memory``, a bounded LRU per replica (one
gateway, tests); ``database``, the table ``gateway_idempotency`` in the gateway's own database
(PostgreSQL when several replicas run), shared by every replica: a replay on any replica gets
the first response for 24 h, a different request under the same key is refused on every
replica. A pending row carries a lease (the request's deadline): a replica that died with a
request in flight blocks its key only until the lease runs out, then the next attempt takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.routing import Route
from services.kit.faults import is_infrastructure_error
from services.kit.logging import get_logger
from services.kit.migrations import upgrade

log = get_logger("zhongtai.gateway.idempotency")
#: The gateway's own Alembic migrations (the shared idempotency table).
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

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

    async def finish(self, client_id: str, key: str, response: StoredResponse) -> None:
        entry = self._entries.get((client_id, key))
        if entry is not None:
            entry.response = response
            entry.done.set()

    async def abandon(self, client_id: str, key: str) -> None:
        """Forget a key whose request failed in a retriable way."""
        entry = self._entries.pop((client_id, key), None)
        if entry is not None:
            entry.done.set()


# ------------------------------------------------------------------------------ shared (SQL) store

METADATA = sa.MetaData()
#: One row per (client, key): the request's fingerprint, then its first response. Times are
#: epoch seconds (the same on every replica, and on SQLite and PostgreSQL alike).
IDEMPOTENCY = sa.Table(
    "gateway_idempotency",
    METADATA,
    sa.Column("client_id", sa.String(200), primary_key=True),
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),  # NULL while the first request runs
    sa.Column("body", sa.LargeBinary, nullable=True),
    sa.Column("headers", sa.Text, nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False),  # a pending row is taken over after this
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

#: How often expired rows are deleted.
_SWEEP_S = 600.0
#: Polling interval of a duplicate waiting for the first request's outcome on another replica.
_POLL_S = 0.05


class SqlIdempotencyStore:
    """The same contract as :class:`IdempotencyStore`, in a table every gateway replica shares.

    ``begin`` claims the key with one INSERT .. ON CONFLICT DO NOTHING; a conflict reads the row:
    a different fingerprint is :class:`KeyReused`, a stored response is returned, a pending one
    is waited for (polled) until it has a response, its lease ran out (the replica holding it
    died: the key is taken over) or ``wait_s`` passes. Expired rows are replaced on use and
    swept by :meth:`sweep`.
    """

    def __init__(self, engine: AsyncEngine, *, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._ttl = ttl_s
        self._clock = clock
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._claim = insert(IDEMPOTENCY).on_conflict_do_nothing()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Migrate the table to head (idempotent; in Kubernetes the migrations Job ran it first),
        then sweep expired rows every ``_SWEEP_S``."""
        await upgrade(self._engine, MIGRATIONS)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await self._engine.dispose()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("idempotency sweep failed", error=type(exc).__name__)

    async def begin(self, client_id: str, key: str, print_: str, *, wait_s: float) -> StoredResponse | None:
        where = (IDEMPOTENCY.c.client_id == client_id) & (IDEMPOTENCY.c.idempotency_key == key)
        give_up = self._clock() + wait_s
        while True:
            now = self._clock()
            claim: dict[str, object] = {"fingerprint": print_, "status": None, "body": None, "headers": None}
            claim |= {"lease_until": now + max(wait_s, 1.0), "expires_at": now + self._ttl}
            async with self._engine.begin() as conn:
                inserted = await conn.execute(self._claim.values(client_id=client_id, idempotency_key=key, **claim))
                if inserted.rowcount == 1:
                    return None
                row = (await conn.execute(sa.select(IDEMPOTENCY).where(where))).one_or_none()
                if row is None:
                    continue  # abandoned between the two statements: claim it again
                stale = row.expires_at <= now or (row.status is None and row.lease_until <= now)
                if stale:
                    # Expired, or pending on a replica that died: take it over (if no one else did).
                    taken = await conn.execute(
                        sa.update(IDEMPOTENCY)
                        .where(where, IDEMPOTENCY.c.expires_at == row.expires_at)
                        .where(IDEMPOTENCY.c.lease_until == row.lease_until)
                        .values(**claim)
                    )
                    if taken.rowcount == 1:
                        return None
                    continue
            if row.fingerprint != print_:
                raise KeyReused(key)
            if row.status is not None:
                headers = tuple((k, v) for k, v in json.loads(row.headers or "[]"))
                return StoredResponse(row.status, row.body or b"", headers)
            if self._clock() + _POLL_S > give_up:
                raise TimeoutError(key)
            await asyncio.sleep(_POLL_S)

    async def finish(self, client_id: str, key: str, response: StoredResponse) -> None:
        """Keep the first response. If the store is down now, the row stays pending until its
        lease runs out; a replay then calls the service again, which replays by request_id."""
        where = (IDEMPOTENCY.c.client_id == client_id) & (IDEMPOTENCY.c.idempotency_key == key)
        values = {"status": response.status, "body": response.body, "headers": json.dumps(response.headers)}
        await self._quietly("finish", sa.update(IDEMPOTENCY).where(where).values(**values))

    async def abandon(self, client_id: str, key: str) -> None:
        where = (IDEMPOTENCY.c.client_id == client_id) & (IDEMPOTENCY.c.idempotency_key == key)
        await self._quietly("abandon", sa.delete(IDEMPOTENCY).where(where, IDEMPOTENCY.c.status.is_(None)))

    async def _quietly(self, what: str, statement: sa.Executable) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(statement)
        except Exception as exc:
            if not is_infrastructure_error(exc):
                raise
            log.warning(f"idempotency store unavailable at {what}: its lease expires", error=type(exc).__name__)

    async def sweep(self) -> int:
        """Delete expired rows; returns how many."""
        async with self._engine.begin() as conn:
            done = await conn.execute(sa.delete(IDEMPOTENCY).where(IDEMPOTENCY.c.expires_at <= self._clock()))
        return done.rowcount or 0
