"""The PII access audit: every unmasked read appends a row to a hash-chained, append-only log
(the chain itself is the kit's: :mod:`services.kit.audit`).

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

from sqlalchemy.exc import DBAPIError

from services.customer.store import AUDIT
from services.kit import AuditChain, AuditEntry, AuditReport, BlindIndex, is_infrastructure_error

_PURPOSE = "pii-audit-chain"

__all__ = ["AuditChain", "AuditEntry", "AuditReport", "main", "pii_audit_chain", "verify_database"]


def pii_audit_chain(keyring: BlindIndex) -> AuditChain:
    """The chain of unmasked reads (tables ``pii_audit_log`` / ``pii_audit_head``)."""
    return AuditChain(keyring, AUDIT, purpose=_PURPOSE)


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
        return await pii_audit_chain(blind).verify(engine)
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
