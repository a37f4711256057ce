"""Hash-chained, append-only audit logs: who saw or did what, when, under which trace.

Each row's ``hash`` is ``HMAC-SHA256(key, prev_hash || canonical row)`` and ``prev_hash`` is the
previous row's hash (``"0"*64`` for the first). Appends lock the chain's single head row, so
concurrent writers (even in several processes) never fork the chain. The migration adds
triggers refusing UPDATE/DELETE/TRUNCATE (:func:`services.kit.migrations.create_audit_chain_v1`);
the keyed chain additionally shows any edit made by someone who can bypass them: changing,
deleting, inserting or reordering a row, or cutting the tail, breaks verification.

A capability declares its two tables with :func:`audit_tables` and appends through
:class:`AuditChain` in the transaction whose answer depends on the audit row (the customer
service's PII reads, the data hub's dead-letter operations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.kit.crypto import BlindIndex
from services.kit.times import epoch_us

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """Who (client id) touched which customer's data (``fields``), how (``method``), when, and
    under which trace."""

    client_id: str
    customer_id: str
    fields: tuple[str, ...]
    method: str
    trace_id: str
    at: datetime


@dataclass(frozen=True)
class AuditTables:
    log: Table
    head: Table


def audit_tables(metadata: MetaData, name: str) -> AuditTables:
    """The chain's rows (``<name>``) and its head (``<name>_head``... as created by the migration)."""
    log = Table(
        name,
        metadata,
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("client_id", String(200), nullable=False),
        Column("customer_id", String(64), nullable=False, index=True),
        Column("fields", Text, nullable=False),
        Column("method", String(200), nullable=False),
        Column("trace_id", String(32), nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    )
    head = Table(
        head_name(name),
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("seq", BigInteger, nullable=False),
        Column("hash", String(64), nullable=False),
    )
    return AuditTables(log, head)


def head_name(name: str) -> str:
    """``pii_audit_log`` → ``pii_audit_head``; any other name gets ``_head`` appended."""
    return name[: -len("_log")] + "_head" if name.endswith("_log") else name + "_head"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite returns naive datetimes


def _canonical(seq: int, at: datetime, client_id: str, customer_id: str, fields: str, method: str,
               trace_id: str) -> bytes:  # fmt: skip
    # Microsecond epoch, not an ISO string: SQLite returns naive datetimes, PostgreSQL aware ones.
    micros = epoch_us(_utc(at))
    return orjson.dumps([seq, micros, client_id, customer_id, fields, method, trace_id])


@dataclass(frozen=True)
class AuditReport:
    ok: bool
    rows: int
    first_bad_seq: int | None
    problem: str

    def __str__(self) -> str:
        if self.ok:
            return f"audit chain OK: {self.rows} rows verified"
        return f"audit chain BROKEN at seq {self.first_bad_seq}: {self.problem} ({self.rows} rows verified before it)"


class AuditChain:
    """Appends to and verifies one chain; ``keyring`` supplies the HMAC key, ``purpose`` separates
    its domain from the key's other uses."""

    def __init__(self, keyring: BlindIndex, tables: AuditTables, *, purpose: str) -> None:
        self._keyring = keyring
        self._log, self._head = tables.log, tables.head
        self._purpose = purpose

    def link(self, prev_hash: str, seq: int, at: datetime, client_id: str, customer_id: str, fields: str,
             method: str, trace_id: str) -> str:  # fmt: skip
        data = prev_hash.encode() + b"\x00" + _canonical(seq, at, client_id, customer_id, fields, method, trace_id)
        return self._keyring.mac(data, purpose=self._purpose).hex()

    async def append(self, session: AsyncSession, entries: Sequence[AuditEntry]) -> None:
        """Add rows in the caller's transaction (it must commit before the caller answers)."""
        if not entries:
            return
        head = self._head.c
        row = (await session.execute(select(head.seq, head.hash).where(head.id == 1).with_for_update())).one()
        seq, prev = int(row.seq), str(row.hash)
        rows: list[dict[str, Any]] = []
        for entry in entries:
            seq += 1
            fields = ",".join(entry.fields)
            at = entry.at.astimezone(UTC)
            digest = self.link(prev, seq, at, entry.client_id, entry.customer_id, fields, entry.method, entry.trace_id)
            rows.append({"seq": seq, "at": at, "client_id": entry.client_id, "customer_id": entry.customer_id,
                         "fields": fields, "method": entry.method, "trace_id": entry.trace_id,
                         "prev_hash": prev, "hash": digest})  # fmt: skip
            prev = digest
        await session.execute(self._log.insert(), rows)
        await session.execute(update(self._head).where(head.id == 1).values(seq=seq, hash=prev))

    async def verify(self, engine: AsyncEngine, *, batch: int = 5000) -> AuditReport:
        """Walk the whole chain in order; report the first broken row."""
        head_c = self._head.c
        async with AsyncSession(engine) as session:
            head = (await session.execute(select(head_c.seq, head_c.hash).where(head_c.id == 1))).first()
            if head is None:
                return AuditReport(False, 0, None, "the chain head row is missing")
            report, checked, prev = await self._walk(session, batch)
        if report is not None:
            return report
        if (head.seq, head.hash) != (checked, prev):
            return AuditReport(False, checked, checked + 1, "rows after the last intact row are missing")
        return AuditReport(True, checked, None, "intact")

    async def _walk(self, session: AsyncSession, batch: int) -> tuple[AuditReport | None, int, str]:
        """(the first break or None, rows checked, the last intact hash)."""
        checked, prev, expected_seq = 0, GENESIS, 1
        log = self._log.c
        last_seq = 0
        while True:
            query = select(self._log).where(log.seq > last_seq).order_by(log.seq).limit(batch)
            rows = (await session.execute(query)).all()
            if not rows:
                return None, checked, prev
            for row in rows:
                if row.seq != expected_seq:
                    return AuditReport(False, checked, expected_seq, f"row {expected_seq} is missing"), checked, prev
                if row.prev_hash != prev:
                    problem = "prev_hash does not link to the previous row"
                    return AuditReport(False, checked, row.seq, problem), checked, prev
                digest = self.link(prev, row.seq, row.at, row.client_id, row.customer_id, row.fields,
                                   row.method, row.trace_id)  # fmt: skip
                if digest != row.hash:
                    return AuditReport(False, checked, row.seq, "row content does not match its hash"), checked, prev
                prev, expected_seq, checked = row.hash, expected_seq + 1, checked + 1
            last_seq = rows[-1].seq


def current_trace_id() -> str:
    """The current span's trace id (hex), or "" outside a trace."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
