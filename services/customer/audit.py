"""The PII access audit: every unmasked read appends a row to a hash-chained, append-only log.

Each row's ``hash`` is ``HMAC-SHA256(audit key, prev_hash || canonical row)`` and ``prev_hash``
is the previous row's hash (``"0"*64`` for the first). Appends lock the single
``pii_audit_head`` row, so concurrent readers (even in several processes) never fork the
chain. Database triggers refuse UPDATE/DELETE/TRUNCATE; the keyed chain additionally shows
any edit made by someone who can bypass them (a DBA): changing, deleting, inserting or
reordering a row, or cutting the tail, breaks verification. The key comes from
``ZT_BLIND_INDEX_KEY`` (domain-separated), so the chain cannot be recomputed without it.

Check the chain (exit code 0 when intact, 1 when not, 2 when the database is unavailable)::

    python -m services.customer.audit verify            # uses ZT_DATABASE_URL and the keys
    python -m services.customer.audit verify --database-url postgresql+asyncpg://...
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.customer.store import AuditHead, AuditRow, utc
from services.kit import BlindIndex, is_infrastructure_error

GENESIS = "0" * 64
_PURPOSE = "pii-audit-chain"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AuditEntry:
    """Who read which customer's clear fields, how, when, and under which trace."""

    client_id: str
    customer_id: str
    fields: tuple[str, ...]
    method: str
    trace_id: str
    at: datetime


def _canonical(seq: int, at: datetime, client_id: str, customer_id: str, fields: str, method: str,
               trace_id: str) -> bytes:  # fmt: skip
    # Microsecond epoch, not an ISO string: SQLite returns naive datetimes, PostgreSQL aware ones.
    micros = (utc(at) - _EPOCH) // timedelta(microseconds=1)
    return orjson.dumps([seq, micros, client_id, customer_id, fields, method, trace_id])


class AuditChain:
    """Appends to and verifies the chain; ``keyring`` supplies the HMAC key."""

    def __init__(self, keyring: BlindIndex) -> None:
        self._keyring = keyring

    def link(self, prev_hash: str, seq: int, at: datetime, client_id: str, customer_id: str, fields: str,
             method: str, trace_id: str) -> str:  # fmt: skip
        data = prev_hash.encode() + b"\x00" + _canonical(seq, at, client_id, customer_id, fields, method, trace_id)
        return self._keyring.mac(data, purpose=_PURPOSE).hex()

    async def append(self, session: AsyncSession, entries: Sequence[AuditEntry]) -> None:
        """Add rows in the caller's transaction (it must commit for the read to be answered)."""
        if not entries:
            return
        head = (await session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update())).one()
        seq, prev = head.seq, head.hash
        for entry in entries:
            seq += 1
            fields = ",".join(entry.fields)
            at = entry.at.astimezone(UTC)
            digest = self.link(prev, seq, at, entry.client_id, entry.customer_id, fields, entry.method, entry.trace_id)
            session.add(
                AuditRow(
                    seq=seq,
                    at=at,
                    client_id=entry.client_id,
                    customer_id=entry.customer_id,
                    fields=fields,
                    method=entry.method,
                    trace_id=entry.trace_id,
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
        head.seq, head.hash = seq, prev
        await session.flush()

    async def verify(self, engine: AsyncEngine, *, batch: int = 5000) -> AuditReport:
        """Walk the whole chain in order; report the first broken row."""
        checked, prev, expected_seq = 0, GENESIS, 1
        async with AsyncSession(engine) as session:
            head = (await session.scalars(select(AuditHead).where(AuditHead.id == 1))).one_or_none()
            if head is None:
                return AuditReport(False, 0, None, "the chain head row is missing")
            last_seq = 0
            while True:
                rows = (
                    await session.scalars(
                        select(AuditRow).where(AuditRow.seq > last_seq).order_by(AuditRow.seq).limit(batch)
                    )
                ).all()
                if not rows:
                    break
                for row in rows:
                    if row.seq != expected_seq:
                        return AuditReport(False, checked, expected_seq, f"row {expected_seq} is missing")
                    if row.prev_hash != prev:
                        return AuditReport(False, checked, row.seq, "prev_hash does not link to the previous row")
                    digest = self.link(prev, row.seq, row.at, row.client_id, row.customer_id, row.fields,
                                       row.method, row.trace_id)  # fmt: skip
                    if digest != row.hash:
                        return AuditReport(False, checked, row.seq, "row content does not match its hash")
                    prev, expected_seq, checked = row.hash, expected_seq + 1, checked + 1
                last_seq = rows[-1].seq
            if (head.seq, head.hash) != (checked, prev):
                return AuditReport(False, checked, checked + 1, "rows after the last intact row are missing")
        return AuditReport(True, checked, None, "intact")


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


async def verify_database(database_url: str | None = None) -> AuditReport:
    """Verify with the service's configuration (ZT_* environment), optionally another database."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.customer.config import CustomerSettings, build_crypto
    from services.kit import load_settings

    overrides: dict[str, object] = {"database_url": database_url} if database_url else {}
    settings = load_settings(CustomerSettings, **overrides)
    _, blind = build_crypto(settings)
    engine = create_async_engine(settings.database_url)
    try:
        return await AuditChain(blind).verify(engine)
    except DBAPIError as exc:
        if is_infrastructure_error(exc):
            raise  # nothing was verified: not a broken chain (main() says so, exit status 2)
        return AuditReport(False, 0, None, f"cannot read the audit tables ({type(exc.orig).__name__}); migrated?")
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.customer.audit", description="PII access audit log")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="verify the hash chain (exit 1: broken, 2: database unavailable)")
    check.add_argument("--database-url", default=None, help="default: ZT_DATABASE_URL")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(verify_database(args.database_url))
    except Exception as exc:
        if not is_infrastructure_error(exc):
            raise
        print(f"audit chain NOT VERIFIED: the database is unavailable ({type(exc).__name__}); retry", file=sys.stderr)
        return 2
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
