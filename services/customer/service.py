"""Use cases of the customer service: one unit of work each, state change + outbox row together.

The gRPC layer (api.py) turns requests into calls here; this module owns transactions,
idempotency (AIP-155 request_id), optimistic concurrency (etag + version), uniqueness of the
national ID (blind index), opaque page tokens and the PII read audit. Rules live in domain.py.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.customer import domain, mapping
from services.customer.audit import AuditChain, AuditEntry
from services.customer.store import CustomerRepository, IdempotencyKeys, IdempotencyRow, PageKey, PiiCodec
from services.kit import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    UnitOfWork,
    add_event,
    read_sessionmaker,
    request_id_reused,
    sessionmaker,
    source_of,
)

SOURCE = source_of("customer")
AGGREGATE = "customer"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Action = Callable[[domain.Customer], tuple[domain.Customer, domain.CustomerEvent | None]]


@dataclass(frozen=True)
class Clock:
    """Now in UTC; today's date in the bank's business time zone (ages, birthdays)."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))

    def now(self) -> datetime:
        return datetime.now(UTC)

    def today(self) -> date:
        return self.now().astimezone(self.zone).date()


def new_customer_id() -> str:
    """Roughly time-ordered, unguessable: ``c`` + 12 hex ms + 12 hex random."""
    return f"c{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Idempotency:
    """The request_id of a mutating call and a keyed fingerprint of the whole request."""

    request_id: str
    method: str
    fingerprint: str


class PageTokens:
    """Opaque, tamper-evident keyset tokens bound to the request's filter."""

    def __init__(self, codec: PiiCodec) -> None:
        self._codec = codec

    def _mac(self, payload: bytes) -> bytes:
        return self._codec.blind.mac(payload, purpose="page-token")[:16]

    def encode(self, key: PageKey, filter_key: str) -> str:
        micros = (key.create_time - _EPOCH) // timedelta(microseconds=1)
        payload = orjson.dumps({"t": micros, "c": key.customer_id, "f": filter_key})
        return ".".join(base64.urlsafe_b64encode(p).decode().rstrip("=") for p in (payload, self._mac(payload)))

    def decode(self, token: str, filter_key: str) -> PageKey:
        def bad(description: str) -> InvalidArgument:
            return InvalidArgument(
                f"page_token: {description}",
                reason="INVALID_PAGE_TOKEN",
                violations=[FieldViolation("page_token", description)],
            )

        try:
            body, mac = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split("."))
        except (ValueError, binascii.Error) as exc:
            raise bad("is not a token this service issued") from exc
        if not secrets.compare_digest(mac, self._mac(body)):
            raise bad("is not a token this service issued")
        data = orjson.loads(body)
        if data.get("f") != filter_key:
            raise bad("was issued for a different filter; keep status and kyc_verified unchanged between pages")
        return PageKey(_EPOCH + timedelta(microseconds=int(data["t"])), str(data["c"]))


class CustomerService:
    """The customer use cases over one database."""

    def __init__(
        self,
        engine: AsyncEngine,
        codec: PiiCodec,
        *,
        after_commit: list[Callable[[], None]] | None = None,
        clock: Clock | None = None,
        risk_validity: timedelta = domain.DEFAULT_RISK_VALIDITY,
    ) -> None:
        self._engine = engine
        self._codec = codec
        self._after_commit = list(after_commit or [])
        self._sessions = sessionmaker(engine)
        self._reads = read_sessionmaker(engine)  # (BEGIN/ROLLBACK-free single reads, ADR 0026)
        self.clock = clock or Clock()
        self._risk_validity = risk_validity
        self._tokens = PageTokens(codec)
        self.audit = AuditChain(codec.blind)

    def _uow(self) -> UnitOfWork:
        return UnitOfWork(self._engine, after_commit=self._after_commit, factory=self._sessions)

    def fingerprint(self, method: str, request_bytes: bytes) -> str:
        """Keyed (HMAC) fingerprint of a request: stored, it reveals nothing about the PII inside."""
        return self._codec.blind.mac(request_bytes, purpose=f"request:{method}").hex()

    def _stage(self, session: AsyncSession, event: domain.CustomerEvent) -> None:
        customer = event.customer
        add_event(
            session,
            mapping.event_message(event, self._codec.national_id_index(customer.personal.national_id)),
            source=SOURCE,
            aggregate_type=AGGREGATE,
            aggregate_id=customer.customer_id,
            version=customer.version,
        )

    async def _replay(
        self, prior: IdempotencyRow, idem: Idempotency, repo: CustomerRepository, customer_id: str | None = None
    ) -> domain.Customer:
        if prior.method != idem.method or prior.fingerprint != idem.fingerprint:
            raise request_id_reused(idem.request_id)
        if customer_id is not None and prior.customer_id != customer_id:
            raise request_id_reused(idem.request_id)
        customer = await repo.get(prior.customer_id)
        if customer is None:  # pragma: no cover - customers are never deleted
            raise NotFound("the customer of this request no longer exists", reason="CUSTOMER_NOT_FOUND")
        return customer

    # -- commands ------------------------------------------------------------------------

    async def create(self, personal: domain.PersonalData, *, idem: Idempotency | None) -> domain.Customer:
        for attempt in (1, 2):
            try:
                return await self._create_once(personal, idem)
            except IntegrityError as exc:
                # A concurrent request won a unique key (same request_id or national ID): the
                # second pass sees its row and answers like a sequential retry would.
                if attempt == 2:
                    raise Aborted("concurrent conflicting create; retry", reason="CONCURRENT_MODIFICATION") from exc
        raise AssertionError("unreachable")

    async def _create_once(self, personal: domain.PersonalData, idem: Idempotency | None) -> domain.Customer:
        async with self._uow() as uow:
            repo, keys = CustomerRepository(uow.session, self._codec), IdempotencyKeys(uow.session)
            if idem is not None:
                prior = await keys.find(idem.request_id)
                if prior is not None:
                    return await self._replay(prior, idem, repo)
            now = self.clock.now()
            customer, event = domain.register(new_customer_id(), personal, today=self.clock.today(), now=now)
            if await repo.exists_national_id(personal.national_id):
                # Never echo the ID, nor say which customer holds it.
                raise AlreadyExists(
                    "a customer with this national_id already exists",
                    reason="NATIONAL_ID_EXISTS",
                    violations=[FieldViolation("customer.national_id", "is already registered")],
                )
            await repo.add(customer)
            self._stage(uow.session, event)
            if idem is not None:
                keys.remember(idem.request_id, method=idem.method, fingerprint=idem.fingerprint,
                              customer_id=customer.customer_id, now=now)  # fmt: skip
            await uow.commit()
        return customer

    async def _mutate(
        self, customer_id: str, *, etag: str, idem: Idempotency | None, action: Action
    ) -> domain.Customer:
        for attempt in (1, 2):
            try:
                return await self._mutate_once(customer_id, etag, idem, action)
            except IntegrityError as exc:
                if attempt == 2:
                    raise Aborted("concurrent conflicting request; retry", reason="CONCURRENT_MODIFICATION") from exc
        raise AssertionError("unreachable")

    async def _mutate_once(
        self, customer_id: str, etag: str, idem: Idempotency | None, action: Action
    ) -> domain.Customer:
        async with self._uow() as uow:
            repo, keys = CustomerRepository(uow.session, self._codec), IdempotencyKeys(uow.session)
            if idem is not None:
                prior = await keys.find(idem.request_id)
                if prior is not None:
                    return await self._replay(prior, idem, repo, customer_id)
            current = await repo.get(customer_id, for_update=True)
            if current is None:
                raise self._not_found(customer_id)
            if etag and etag != mapping.etag_of(current):
                raise Aborted(
                    "etag does not match the current customer; re-read and retry",
                    reason="ETAG_MISMATCH",
                    metadata={"customer_id": customer_id},
                )
            new, event = action(current)
            if event is not None:
                # Row first (version bump), then its outbox row: per-aggregate outbox order = commit order.
                await repo.save(new, expected_version=current.version)
                self._stage(uow.session, event)
            if idem is not None:
                keys.remember(idem.request_id, method=idem.method, fingerprint=idem.fingerprint,
                              customer_id=customer_id, now=self.clock.now())  # fmt: skip
            await uow.commit()
        return new

    async def update(
        self, customer_id: str, changes: dict[str, object], *, etag: str, idem: Idempotency | None
    ) -> domain.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            return c.update(changes, today=self.clock.today(), now=self.clock.now())

        return await self._mutate(customer_id, etag=etag, idem=idem, action=action)

    async def verify(
        self, customer_id: str, *, approve: bool, reason: str, etag: str, idem: Idempotency | None
    ) -> domain.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            if approve:
                return c.approve(today=self.clock.today(), now=self.clock.now())
            return c.reject(reason, now=self.clock.now())

        return await self._mutate(customer_id, etag=etag, idem=idem, action=action)

    async def assess_risk(
        self, customer_id: str, score: int, *, etag: str, idem: Idempotency | None
    ) -> domain.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            return c.assess_risk(score, now=self.clock.now(), validity=self._risk_validity)

        return await self._mutate(customer_id, etag=etag, idem=idem, action=action)

    async def close(self, customer_id: str, *, reason: str, etag: str, idem: Idempotency | None) -> domain.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            return c.close(reason, now=self.clock.now())

        return await self._mutate(customer_id, etag=etag, idem=idem, action=action)

    # -- queries -------------------------------------------------------------------------

    @staticmethod
    def _not_found(customer_id: str) -> NotFound:
        return NotFound(
            f"customer {customer_id} not found", reason="CUSTOMER_NOT_FOUND", metadata={"customer_id": customer_id}
        )

    async def get(self, customer_id: str) -> domain.Customer:
        async with self._reads() as session:
            customer = await CustomerRepository(session, self._codec).get(customer_id)
        if customer is None:
            raise self._not_found(customer_id)
        return customer

    async def list(
        self, *, status: domain.Status | None, kyc_verified: bool | None, page_size: int, page_token: str
    ) -> tuple[Sequence[domain.Customer], str]:
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        filter_key = f"{int(status) if status else 0}|{'' if kyc_verified is None else int(kyc_verified)}"
        after = self._tokens.decode(page_token, filter_key) if page_token else None
        async with self._reads() as session:
            page = await CustomerRepository(session, self._codec).page(
                status=status, kyc_verified=kyc_verified, after=after, limit=size + 1
            )
        if len(page) <= size:
            return page, ""
        page = page[:size]
        last = page[-1]
        return page, self._tokens.encode(PageKey(last.create_time, last.customer_id), filter_key)

    async def record_reads(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit rows for unmasked reads; the caller answers only after this commits."""
        if not entries:
            return
        async with UnitOfWork(self._engine, factory=self._sessions) as uow:
            await self.audit.append(uow.session, entries)
            await uow.commit()
