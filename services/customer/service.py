"""Use cases of the customer service: one unit of work each, state change + outbox row together.

The gRPC layer (api.py) turns requests into calls here; this module owns transactions,
optimistic concurrency (etag + version), uniqueness of the national ID (blind index), opaque
page tokens and the PII read audit. Rules live in domain.py. Every write runs through the kit's
command port (:class:`services.kit.Commands`): request_id replay with a keyed fingerprint, the
unique-violation retry, the outbox row and the relay's wake-up. A write answers with the whole
resource in clear (the api masks it for the caller); its first response is stored sealed with
the PII cipher (docs/adr/0013-command-port-replays-the-first-response.md).
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
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2
from services.customer import domain, mapping
from services.customer.audit import AuditEntry, pii_audit_chain
from services.customer.store import (
    CustomerRepository,
    PageKey,
    PiiCodec,
    read_customer,
    read_eligibilities,
    read_eligibility,
    read_page,
)
from services.kit import (
    Aborted,
    AlreadyExists,
    Commands,
    FieldCipher,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Reader,
    Tx,
    UnitOfWork,
    add_event,
    canonical_request,
    epoch_us,
    from_epoch_us,
    sessionmaker,
    source_of,
)

SOURCE = source_of("customer")
AGGREGATE = "customer"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

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


class SealedResponses:
    """A write's first response holds clear PII: stored encrypted with the PII cipher (its key
    rotation included), bound to its record's key so it cannot be moved to another."""

    def __init__(self, cipher: FieldCipher) -> None:
        self._cipher = cipher

    def seal(self, key: str, response: bytes) -> bytes:
        return self._cipher.encrypt(base64.b64encode(response).decode(), f"command:{key}".encode()).encode()

    def unseal(self, key: str, sealed: bytes) -> bytes:
        return base64.b64decode(self._cipher.decrypt(sealed.decode(), f"command:{key}".encode()))


class PageTokens:
    """Opaque, tamper-evident keyset tokens bound to the request's filter."""

    def __init__(self, codec: PiiCodec) -> None:
        self._codec = codec

    def _mac(self, payload: bytes) -> bytes:
        return self._codec.blind.mac(payload, purpose="page-token")[:16]

    def encode(self, key: PageKey, filter_key: str) -> str:
        micros = epoch_us(key.create_time)
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
        return PageKey(from_epoch_us(int(data["t"])), str(data["c"]))


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
        self._reader = Reader(engine)  # (one Core statement on the pool's driver connection, ADR 0029)
        self.clock = clock or Clock()
        self._risk_validity = risk_validity
        self._tokens = PageTokens(codec)
        self.audit = pii_audit_chain(codec.blind)
        self._commands = Commands(
            engine, after_commit=self._after_commit, fingerprint=self.fingerprint, sealer=SealedResponses(codec.cipher)
        )

    def fingerprint(self, method: str, request: Message) -> str:
        """Keyed (HMAC) fingerprint of a request: stored, it reveals nothing about the PII inside."""
        return self._codec.blind.mac(canonical_request(request), purpose=f"request:{method}").hex()

    def _stage(self, tx: Tx, event: domain.CustomerEvent) -> None:
        customer = event.customer
        add_event(
            tx,
            mapping.event_message(event, self._codec.national_id_index(customer.personal.national_id)),
            source=SOURCE,
            aggregate_type=AGGREGATE,
            aggregate_id=customer.customer_id,
            version=customer.version,
        )

    # -- commands ------------------------------------------------------------------------

    async def create(self, personal: domain.PersonalData, *, request: Message) -> customer_pb2.Customer:
        """Register a customer; the whole resource in clear (mask it before it leaves)."""

        async def decide(tx: Tx) -> customer_pb2.Customer:
            repo = CustomerRepository(tx, self._codec)
            customer, event = domain.register(
                new_customer_id(), personal, today=self.clock.today(), now=self.clock.now()
            )
            if await repo.exists_national_id(personal.national_id):
                # Never echo the ID, nor say which customer holds it.
                raise AlreadyExists(
                    "a customer with this national_id already exists",
                    reason="NATIONAL_ID_EXISTS",
                    violations=[FieldViolation("customer.national_id", "is already registered")],
                )
            repo.add(customer)
            self._stage(tx, event)
            return mapping.to_proto(customer)

        return await self._commands.run_core("CreateCustomer", request, customer_pb2.Customer, decide)

    async def _mutate(
        self, method: str, request: Message, customer_id: str, *, etag: str, action: Action
    ) -> customer_pb2.Customer:
        async def decide(tx: Tx) -> customer_pb2.Customer:
            repo = CustomerRepository(tx, self._codec)
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
                self._stage(tx, event)
            return mapping.to_proto(new)

        return await self._commands.run_core(method, request, customer_pb2.Customer, decide, fold_replay=True)

    async def update(
        self, customer_id: str, changes: dict[str, object], *, etag: str, request: Message
    ) -> customer_pb2.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            return c.update(changes, today=self.clock.today(), now=self.clock.now())

        return await self._mutate("UpdateCustomer", request, customer_id, etag=etag, action=action)

    async def verify(
        self, customer_id: str, *, approve: bool, reason: str, etag: str, request: Message
    ) -> customer_pb2.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            if approve:
                return c.approve(today=self.clock.today(), now=self.clock.now())
            return c.reject(reason, now=self.clock.now())

        return await self._mutate("VerifyCustomer", request, customer_id, etag=etag, action=action)

    async def assess_risk(self, customer_id: str, score: int, *, etag: str, request: Message) -> customer_pb2.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            return c.assess_risk(score, now=self.clock.now(), validity=self._risk_validity)

        return await self._mutate("AssessRisk", request, customer_id, etag=etag, action=action)

    async def close(self, customer_id: str, *, reason: str, etag: str, request: Message) -> customer_pb2.Customer:
        def action(c: domain.Customer) -> tuple[domain.Customer, domain.CustomerEvent | None]:
            return c.close(reason, now=self.clock.now())

        return await self._mutate("CloseCustomer", request, customer_id, etag=etag, action=action)

    # -- queries -------------------------------------------------------------------------

    @staticmethod
    def _not_found(customer_id: str) -> NotFound:
        return NotFound(
            f"customer {customer_id} not found", reason="CUSTOMER_NOT_FOUND", metadata={"customer_id": customer_id}
        )

    async def get(self, customer_id: str) -> domain.Customer:
        customer = await read_customer(self._reader, self._codec, customer_id)
        if customer is None:
            raise self._not_found(customer_id)
        return customer

    async def eligibility(self, customer_id: str) -> domain.EligibilityFacts:
        """The facts product eligibility needs: one narrow read, one field decrypted."""
        facts = await read_eligibility(self._reader, self._codec, customer_id)
        if facts is None:
            raise self._not_found(customer_id)
        return facts

    async def eligibilities(self, customer_ids: list[str]) -> dict[str, domain.EligibilityFacts]:
        """:meth:`eligibility` of several customers in one read: the ones that exist, by id."""
        return await read_eligibilities(self._reader, self._codec, customer_ids, dialect=self._engine.dialect.name)

    async def list(
        self, *, status: domain.Status | None, kyc_verified: bool | None, page_size: int, page_token: str
    ) -> tuple[Sequence[domain.Customer], str]:
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        filter_key = f"{int(status) if status else 0}|{'' if kyc_verified is None else int(kyc_verified)}"
        after = self._tokens.decode(page_token, filter_key) if page_token else None
        page = await read_page(
            self._reader, self._codec, status=status, kyc_verified=kyc_verified, after=after, limit=size + 1
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
