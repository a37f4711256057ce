"""The command port: one way to run a state-changing use case (ARCHITECTURE §9).

:meth:`Commands.run` does the plumbing every write needs, so a use case only decides:

1. **Replay** (AIP-155): a request carrying a ``request_id`` seen before for the same method
   returns the first call's response, if the request is the same (its fingerprint: a digest of
   the request without its ``request_id``); the same key with a different request is refused
   with ALREADY_EXISTS, reason ``REQUEST_ID_REUSED`` (docs/adr/0013).
2. **Decide** in ONE unit of work: the use case's ``decide(session)`` changes the aggregate and
   stages its events with :func:`services.kit.outbox.add_event`; the response is remembered under
   the key in the same transaction, then it commits and the ``after_commit`` callbacks wake the
   outbox relay.
3. **Unique violations**: a concurrent duplicate loses on a primary or unique key and rolls
   back; the whole step runs once more, where it replays the winner's response (same key) or
   meets the winner's row in ``decide`` (e.g. "already exists"). A second collision is ABORTED,
   reason ``CONCURRENT_MODIFICATION`` (retry).

A use case that must call another service first (outside any transaction) asks
:meth:`Commands.replayed` before that call, so a retry is answered without it.

A response that holds personal data is stored sealed: the service gives a :class:`Sealer`
(e.g. its PII cipher, bound to the record's key), and a keyed ``fingerprint`` (an HMAC, so a
stored fingerprint cannot be brute-forced back to a national ID). The response is stored as
the service built it, in clear inside the seal; masking for the caller happens on the way out,
for the first call and a replay alike.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from asyncpg.exceptions import IntegrityConstraintViolationError
from google.protobuf.message import Message
from sqlalchemy import (
    DateTime,
    LargeBinary,
    Select,
    String,
    Table,
    Update,
    bindparam,
    exists,
    literal_column,
    select,
    true,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.kit.db import UnitOfWork
from services.kit.errors import Aborted, AlreadyExists, FieldViolation
from services.kit.reads import Reader
from services.kit.staging import stage_insert
from services.kit.writes import SessionTx, Tx, driver_writes, transaction

M = TypeVar("M", bound=Message)
#: A concurrent duplicate lost on a unique key: SQLAlchemy's, or asyncpg's on the driver path.
_INTEGRITY_ERRORS = (IntegrityError, IntegrityConstraintViolationError)
Fingerprint = Callable[[str, Message], str]


class _CommandBase(DeclarativeBase):
    pass


class CommandRecord(_CommandBase):
    """The first response to a request_id (``idempotency_keys``; created by a service's migration)."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # "<method>:<request_id>"
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_RECORDS: Table = CommandRecord.__table__  # type: ignore[assignment]
#: The replay read: Core on the table (no ORM identity map or unit of work for a read-only row).
_REPLAY = select(_RECORDS.c.fingerprint, _RECORDS.c.response).where(_RECORDS.c.key == bindparam("key"))


class Sealer(Protocol):
    """Seals a stored response (and opens it again), bound to its record's key."""

    def seal(self, key: str, response: bytes) -> bytes: ...

    def unseal(self, key: str, sealed: bytes) -> bytes: ...


def canonical_request(request: Message) -> bytes:
    """The request's deterministic bytes without its ``request_id``: what a fingerprint covers."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)


def digest(method: str, request: Message) -> str:
    """The default fingerprint: SHA-256 of the request without its ``request_id``."""
    return hashlib.sha256(canonical_request(request)).hexdigest()


def request_id_reused(request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id} was already used for a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
        violations=[FieldViolation("request_id", "already used for a different request")],
    )


class Commands:
    """The command port of one service's database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        after_commit: list[Callable[[], None]] | None = None,
        fingerprint: Fingerprint = digest,
        sealer: Sealer | None = None,
    ) -> None:
        self._engine = engine
        self._sealer = sealer
        self._after_commit = list(after_commit or [])
        self._reader = Reader(engine)
        self._fingerprint = fingerprint
        self._folds = driver_writes(engine)

    async def replayed(self, method: str, request: Message, response: type[M]) -> M | None:
        """The first response to this request's ``request_id``, if there was one (its own read)."""
        if not (request_id := _request_id(request)):
            return None
        row = await self._reader.first(_REPLAY, {"key": f"{method}:{request_id}"})
        return self._replay_of(row, method, request, response)

    async def replayed_or_read(
        self, method: str, request: Message, response: type[M], statement: Select[Any], params: dict[str, Any]
    ) -> tuple[M | None, Any | None]:
        """:meth:`replayed` and the first row of a plain ``statement`` (built once) in ONE read on
        PostgreSQL: ``(first response, None)`` for a request seen before, else ``(None, row or
        None)``. Elsewhere the two reads one after the other."""
        request_id = _request_id(request)
        if not request_id:
            return None, await self._reader.first(statement, params)
        if not self._folds:
            done = await self.replayed(method, request, response)
            return done, None if done is not None else await self._reader.first(statement, params)
        row = await self._reader.first(_folded(statement), {**params, "zt_key": f"{method}:{request_id}"})
        if row is None:  # (cannot happen: the statement's source is one row)
            return None, None
        done = self._replay_of((row[0], row[1]) if row[0] is not None else None, method, request, response)
        return done, None if done is not None or row[-1] is None else tuple(row[2:-1])

    async def run(
        self,
        method: str,
        request: Message,
        response: type[M],
        decide: Callable[[AsyncSession], Awaitable[M]],
        *,
        replay_checked: bool = False,
    ) -> M:
        """Replay, or ``decide`` and remember in one unit of work; see the module docstring.
        ``replay_checked``: the caller asked :meth:`replayed` just before (skip that read once)."""

        async def once(check: bool) -> M:
            async with UnitOfWork(self._engine, after_commit=self._after_commit) as uow:
                tx = SessionTx(uow.session)
                # (in the write transaction itself: one connection checkout on the hot path)
                if check and (done := await self._replay(tx, method, request, response)) is not None:
                    return done
                result = await decide(uow.session)
                self._remember(tx, method, request, result)
                await uow.commit()
            return result

        return await self._attempts(once, replay_checked)

    async def run_core(
        self,
        method: str,
        request: Message,
        response: type[M],
        decide: Callable[[Tx], Awaitable[M]],
        *,
        replay_checked: bool = False,
        fold_replay: bool = False,
    ) -> M:
        """:meth:`run` for a use case of Core statements only: ``decide(tx)`` runs them on a
        :class:`services.kit.writes.Tx` — on PostgreSQL the pooled asyncpg connection itself
        (ADR 0042), elsewhere a unit of work's session. Same replay, record, retry and wake-up.

        ``fold_replay``: the use case's first statement (an ``UPDATE … RETURNING`` or a locking
        ``SELECT``) runs through :func:`first_or_replay`, which on the driver path carries the replay read in the same
        statement (one round trip for both; the UPDATE is skipped when the key was seen)."""

        async def once(check: bool) -> M:
            async with transaction(self._engine, after_commit=self._after_commit) as (tx, commit):
                key = f"{method}:{_request_id(request)}"
                if check and fold_replay and self._folds and _request_id(request):
                    tx.info[_FOLD] = key
                elif check and (done := await self._replay(tx, method, request, response)) is not None:
                    return done
                try:
                    result = await decide(tx)
                except _Replayed as seen:
                    replayed = self._replay_of((seen.fingerprint, seen.response), method, request, response)
                    if replayed is None:  # (cannot be: a row was given)
                        raise AssertionError("no replay") from None
                    return replayed
                if tx.info.pop(_FOLD, None) is not None and (done := await self._replay(tx, method, request, response)):
                    return done  # (the use case never ran the folded statement: the plain read, then)
                self._remember(tx, method, request, result)
                await commit()
            return result

        return await self._attempts(once, replay_checked)

    @staticmethod
    async def _attempts(once: Callable[[bool], Awaitable[M]], replay_checked: bool) -> M:
        for attempt in (1, 2):
            try:
                return await once(attempt == 2 or not replay_checked)
            except _INTEGRITY_ERRORS as exc:
                if attempt == 2:
                    raise Aborted("concurrent conflicting request; retry", reason="CONCURRENT_MODIFICATION") from exc
        raise AssertionError("unreachable")

    def _remember(self, tx: Tx, method: str, request: Message, result: Message) -> None:
        """Stage the idempotency record (written at commit with the outbox rows, ADR 0031)."""
        if request_id := _request_id(request):
            key = f"{method}:{request_id}"
            stored = result.SerializeToString()
            stage_insert(
                tx,
                _RECORDS,
                {
                    "key": key,
                    "fingerprint": self._fingerprint(method, request),
                    "response": stored if self._sealer is None else self._sealer.seal(key, stored),
                    "create_time": datetime.now(UTC),
                },
            )

    async def _replay(self, tx: Tx, method: str, request: Message, response: type[M]) -> M | None:
        if not (request_id := _request_id(request)):
            return None
        row = await tx.first(_REPLAY, {"key": f"{method}:{request_id}"})
        return self._replay_of(row, method, request, response)

    def _replay_of(self, row: Any, method: str, request: Message, response: type[M]) -> M | None:
        if row is None:
            return None
        fingerprint, stored = row[0], row[1]
        if fingerprint != self._fingerprint(method, request):
            raise request_id_reused(_request_id(request))
        key = f"{method}:{_request_id(request)}"
        return response.FromString(stored if self._sealer is None else self._sealer.unseal(key, stored))


_FOLD = "zt_fold_replay"  # tx.info: the replay key first_or_replay folds into its statement


class _Replayed(Exception):
    def __init__(self, fingerprint: str, response: bytes) -> None:
        super().__init__("replayed")
        self.fingerprint, self.response = fingerprint, response


@functools.lru_cache(maxsize=32)
def _folded(statement: Update | Select[Any]) -> Select[Any]:
    """``statement`` (an UPDATE … RETURNING or a SELECT, e.g. FOR UPDATE) skipped if the replay
    key exists, and that key's record beside its row: ``fingerprint, response, <its columns>,
    zt_found``; always one row."""
    prior = (
        select(_RECORDS.c.fingerprint, _RECORDS.c.response).where(_RECORDS.c.key == bindparam("zt_key")).cte("zt_prior")
    )
    found: Any = literal_column("1").label("zt_found")
    guarded = statement.where(~exists(select(prior.c.fingerprint)))
    body = (guarded.returning(found) if isinstance(guarded, Update) else guarded.add_columns(found)).cte("zt_body")
    one = select(literal_column("1").label("zt_one")).subquery("zt_one")
    source = one.outerjoin(prior, true()).outerjoin(body, true())
    return select(prior.c.fingerprint, prior.c.response, body).select_from(source)


async def first_or_replay(tx: Tx, statement: Update | Select[Any], params: dict[str, Any]) -> Any | None:
    """The first row of ``statement`` (an ``UPDATE … RETURNING`` or a ``SELECT … FOR UPDATE``,
    built once), or None; when :meth:`Commands.run_core` folds its replay read (``fold_replay``),
    both in one statement — a request seen before then answers its first response without the
    statement taking effect."""
    key = tx.info.pop(_FOLD, None)
    if key is None:
        return await tx.first(statement, params)
    row = await tx.first(_folded(statement), {**params, "zt_key": key})
    if row is None:  # (cannot happen: the statement's source is one row)
        return None
    if row[0] is not None:
        raise _Replayed(row[0], row[1])
    return tuple(row[2:-1]) if row[-1] is not None else None


def _request_id(request: Message) -> str:
    return str(getattr(request, "request_id", "") or "")
