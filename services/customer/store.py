"""Persistence of customers: SQLAlchemy models, PII encryption at rest and repositories.

Every PII column holds a :mod:`services.kit.crypto` ciphertext bound to its row and column
(associated data ``customer:<id>:<column>``); the national ID also has an HMAC blind index
with a UNIQUE constraint, which is how identity uniqueness is enforced without ever storing
or comparing the clear ID. The schema itself changes only through ``migrations/``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.customer.domain import Customer, EligibilityFacts, PersonalData, RiskTolerance, Status
from services.kit import (
    Aborted,
    BlindIndex,
    FieldCipher,
    Reader,
    Tx,
    audit_tables,
    first_or_replay,
    in_list,
    stage_insert,
)


class CustomerBase(DeclarativeBase):
    """Declarative base of the customer service's own tables."""


class CustomerRow(CustomerBase):
    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    full_name_enc: Mapped[str] = mapped_column(Text)
    birth_date_enc: Mapped[str] = mapped_column(Text)
    national_id_enc: Mapped[str] = mapped_column(Text)
    national_id_bidx: Mapped[str] = mapped_column(String(64), unique=True)
    mobile_enc: Mapped[str] = mapped_column(Text)
    email_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[int] = mapped_column(SmallInteger)
    kyc_verified: Mapped[bool] = mapped_column(Boolean)
    risk_tolerance: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    risk_tolerance_expire_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_customers_page", "create_time", "customer_id"),
        Index("ix_customers_status_page", "status", "kyc_verified", "create_time", "customer_id"),
    )


CUSTOMERS: Table = CustomerRow.__table__  # type: ignore[assignment]
_ELIGIBILITY = select(
    CUSTOMERS.c.status,
    CUSTOMERS.c.kyc_verified,
    CUSTOMERS.c.birth_date_enc,
    CUSTOMERS.c.risk_tolerance,
    CUSTOMERS.c.risk_tolerance_expire_time,
    CUSTOMERS.c.version,
).where(CUSTOMERS.c.customer_id == bindparam("customer_id"))
_NATIONAL_ID_TAKEN = select(CUSTOMERS.c.customer_id).where(CUSTOMERS.c.national_id_bidx == bindparam("bidx")).limit(1)


class CustomerRecord(NamedTuple):
    """A ``customers`` row read with Core (:class:`services.kit.Reader`): the columns of
    :class:`CustomerRow` by the same names, without an ORM object to build (ADR 0029)."""

    customer_id: str
    full_name_enc: str
    birth_date_enc: str
    national_id_enc: str
    national_id_bidx: str
    mobile_enc: str
    email_enc: str | None
    status: int
    kyc_verified: bool
    risk_tolerance: int | None
    risk_tolerance_expire_time: datetime | None
    version: int
    create_time: datetime
    update_time: datetime


#: The hash-chained PII read audit (append-only, triggers in the migration): services.kit.audit.
AUDIT = audit_tables(CustomerBase.metadata, "pii_audit_log")


def utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes: everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class PiiCodec:
    """Encrypts a customer's PII for its row and decrypts it back; computes the blind index."""

    def __init__(self, cipher: FieldCipher, blind_index: BlindIndex) -> None:
        self.cipher = cipher
        self.blind = blind_index

    def national_id_index(self, national_id: str) -> str:
        return self.blind.compute(national_id, domain="national_id")

    def _seal(self, customer_id: str, column: str, value: str) -> str:
        return self.cipher.encrypt(value, f"customer:{customer_id}:{column}".encode())

    def _open(self, customer_id: str, column: str, token: str) -> str:
        return self.cipher.decrypt(token, f"customer:{customer_id}:{column}".encode())

    def sealed(self, customer_id: str, personal: PersonalData) -> dict[str, str | None]:
        return {
            "full_name_enc": self._seal(customer_id, "full_name", personal.full_name),
            "birth_date_enc": self._seal(customer_id, "birth_date", personal.birth_date.isoformat()),
            "national_id_enc": self._seal(customer_id, "national_id", personal.national_id),
            "national_id_bidx": self.national_id_index(personal.national_id),
            "mobile_enc": self._seal(customer_id, "mobile", personal.mobile),
            "email_enc": self._seal(customer_id, "email", personal.email) if personal.email else None,
        }

    def birth_date(self, customer_id: str, token: str) -> date:
        return date.fromisoformat(self._open(customer_id, "birth_date", token))

    def personal(self, row: CustomerRow | CustomerRecord) -> PersonalData:
        cid = row.customer_id
        return PersonalData(
            full_name=self._open(cid, "full_name", row.full_name_enc),
            birth_date=self.birth_date(cid, row.birth_date_enc),
            national_id=self._open(cid, "national_id", row.national_id_enc),
            mobile=self._open(cid, "mobile", row.mobile_enc),
            email=self._open(cid, "email", row.email_enc) if row.email_enc else "",
        )

    def to_domain(self, row: CustomerRow | CustomerRecord) -> Customer:
        return Customer(
            customer_id=row.customer_id,
            personal=self.personal(row),
            status=Status(row.status),
            kyc_verified=row.kyc_verified,
            version=row.version,
            create_time=utc(row.create_time),
            update_time=utc(row.update_time),
            risk_tolerance=RiskTolerance(row.risk_tolerance) if row.risk_tolerance else None,
            risk_tolerance_expire_time=utc(row.risk_tolerance_expire_time) if row.risk_tolerance_expire_time else None,
        )

    def needs_rotation(self, row: CustomerRow) -> bool:
        tokens = [row.full_name_enc, row.birth_date_enc, row.national_id_enc, row.mobile_enc, row.email_enc]
        return any(self.cipher.needs_rotation(t) for t in tokens if t)


def _state_columns(customer: Customer) -> dict[str, object]:
    return {
        "status": int(customer.status),
        "kyc_verified": customer.kyc_verified,
        "risk_tolerance": int(customer.risk_tolerance) if customer.risk_tolerance else None,
        "risk_tolerance_expire_time": customer.risk_tolerance_expire_time,
        "version": customer.version,
        "update_time": customer.update_time,
    }


@dataclass(frozen=True)
class PageKey:
    """Keyset position: the last row of the previous page in (create_time, customer_id) order."""

    create_time: datetime
    customer_id: str


class CustomerRepository:
    """Customers in one write transaction (the command port's :class:`services.kit.Tx`: Core
    statements built once, on PostgreSQL at the driver's cost, ADR 0042)."""

    def __init__(self, tx: Tx, codec: PiiCodec) -> None:
        self.tx = tx
        self.codec = codec

    async def get(self, customer_id: str, *, for_update: bool = False) -> Customer | None:
        """The customer (``for_update``: locked until the commit, with the command port's replay
        read folded in when it asks: ``run_core(fold_replay=True)``)."""
        params = {"customer_id": customer_id}
        row = await (
            first_or_replay(self.tx, _BY_ID_FOR_UPDATE, params) if for_update else self.tx.first(_BY_ID, params)
        )
        return self.codec.to_domain(CustomerRecord(*row)) if row is not None else None

    async def exists_national_id(self, national_id: str) -> bool:
        index = self.codec.national_id_index(national_id)
        return await self.tx.first(_NATIONAL_ID_TAKEN, {"bidx": index}) is not None

    def add(self, customer: Customer) -> None:
        """Stage the new row: written at commit, before its outbox row, in the same round trip
        (ADR 0031); a national ID registered meanwhile fails that commit on the blind index."""
        stage_insert(
            self.tx,
            CUSTOMERS,
            {
                "customer_id": customer.customer_id,
                "create_time": customer.create_time,
                **self.codec.sealed(customer.customer_id, customer.personal),
                **_state_columns(customer),
            },
        )

    async def save(self, customer: Customer, *, expected_version: int) -> None:
        """Write a new state; the version check makes a lost race ABORTED, never a silent overwrite.

        PII is re-sealed on every write, so rows sealed under an old key move to the current one.
        """
        values = _state_columns(customer)
        values.update(self.codec.sealed(customer.customer_id, customer.personal))
        params = {f"v_{name}": value for name, value in values.items()}
        params.update(p_customer_id=customer.customer_id, p_expected=expected_version)
        if await self.tx.execute(_SAVE, params) != 1:
            raise Aborted("the customer was changed concurrently; re-read and retry", reason="CONCURRENT_MODIFICATION")


#: The columns a write changes (:func:`_state_columns` and :meth:`PiiCodec.sealed`).
_WRITTEN = (
    "status",
    "kyc_verified",
    "risk_tolerance",
    "risk_tolerance_expire_time",
    "version",
    "update_time",
    "full_name_enc",
    "birth_date_enc",
    "national_id_enc",
    "national_id_bidx",
    "mobile_enc",
    "email_enc",
)
_SAVE = (
    update(CUSTOMERS)
    .where(
        CUSTOMERS.c.customer_id == bindparam("p_customer_id"),
        CUSTOMERS.c.version == bindparam("p_expected", type_=BigInteger),
    )
    .values({name: bindparam(f"v_{name}", type_=CUSTOMERS.c[name].type) for name in _WRITTEN})
)


# ------------------------------------------------------------------------------------------
# Reads (GetCustomer, ListCustomers, GetEligibilityProfile): Core statements built once, run by
# the kit's Reader (one statement, no ORM object, no session; ADR 0029)
# ------------------------------------------------------------------------------------------

_customers = CustomerRow.__table__
_RECORD_COLUMNS = tuple(_customers.c[name] for name in CustomerRecord._fields)
_BY_ID = select(*_RECORD_COLUMNS).where(_customers.c.customer_id == bindparam("customer_id"))
_BY_ID_FOR_UPDATE = _BY_ID.with_for_update()


@functools.lru_cache(maxsize=16)
def _page_query(by_status: bool, by_kyc: bool, after: bool) -> Any:
    c = _customers.c
    query = select(*_RECORD_COLUMNS)
    if by_status:
        query = query.where(c.status == bindparam("status", type_=SmallInteger))
    if by_kyc:
        query = query.where(c.kyc_verified == bindparam("kyc_verified", type_=Boolean))
    if after:
        at, cid = bindparam("after_time", type_=DateTime(timezone=True)), bindparam("after_id", type_=String)
        query = query.where(or_(c.create_time > at, and_(c.create_time == at, c.customer_id > cid)))
    return query.order_by(c.create_time, c.customer_id).limit(bindparam("limit", type_=BigInteger))


async def read_customer(reader: Reader, codec: PiiCodec, customer_id: str) -> Customer | None:
    """One customer by id, or None."""
    row = await reader.first(_BY_ID, {"customer_id": customer_id})
    return codec.to_domain(CustomerRecord(*row)) if row is not None else None


async def read_eligibility(reader: Reader, codec: PiiCodec, customer_id: str) -> EligibilityFacts | None:
    """What product eligibility needs (no other PII decrypted): one Core SELECT."""
    row = await reader.first(_ELIGIBILITY, {"customer_id": customer_id})
    return None if row is None else _facts(codec, customer_id, row)


@functools.lru_cache(maxsize=4)
def _eligibilities(dialect: str) -> Any:
    """:data:`_ELIGIBILITY` for a list of customers (built once per dialect), the id first."""
    columns = _ELIGIBILITY.selected_columns
    return select(CUSTOMERS.c.customer_id, *columns).where(in_list(dialect, CUSTOMERS.c.customer_id, "ids"))


async def read_eligibilities(
    reader: Reader, codec: PiiCodec, customer_ids: list[str], *, dialect: str
) -> dict[str, EligibilityFacts]:
    """:func:`read_eligibility` of several customers in one SELECT: the ones found, by id."""
    rows = await reader.all(_eligibilities(dialect), {"ids": customer_ids})
    return {row[0]: _facts(codec, row[0], row[1:]) for row in rows}


def _facts(codec: PiiCodec, customer_id: str, row: Any) -> EligibilityFacts:
    status, kyc_verified, birth_date_enc, risk_tolerance, expires, version = row
    return EligibilityFacts(
        customer_id=customer_id,
        status=Status(status),
        kyc_verified=bool(kyc_verified),
        birth_date=codec.birth_date(customer_id, birth_date_enc),
        risk_tolerance=RiskTolerance(risk_tolerance) if risk_tolerance else None,
        risk_tolerance_expire_time=utc(expires) if expires else None,
        version=version,
    )


async def read_page(
    reader: Reader, codec: PiiCodec, *, status: Status | None, kyc_verified: bool | None, after: PageKey | None,
    limit: int,
) -> list[Customer]:  # fmt: skip
    """A keyset page in (create_time, customer_id) order."""
    params: dict[str, object] = {"limit": limit}
    if status is not None:
        params["status"] = int(status)
    if kyc_verified is not None:
        params["kyc_verified"] = kyc_verified
    if after is not None:
        params["after_time"], params["after_id"] = after.create_time, after.customer_id
    rows = await reader.all(_page_query(status is not None, kyc_verified is not None, after is not None), params)
    return [codec.to_domain(CustomerRecord(*row)) for row in rows]
