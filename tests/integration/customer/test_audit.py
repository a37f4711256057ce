"""Unmasked reads are audited in an append-only, hash-chained table; the verify command finds tampering."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bank.customer.v1 import customer_pb2
from services.customer.audit import verify_database
from tests.integration.customer.conftest import PII_READER, Client, RunningService, person
from tests.support.procs import REPO


@pytest.fixture
async def db(customer_service: RunningService) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(customer_service.database_url)
    yield engine
    await engine.dispose()


def verify_audit(service: RunningService) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.customer.audit", "verify"],
        cwd=REPO, env=service.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def audit_rows(db: AsyncEngine, customer_id: str) -> list[dict]:
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT seq, client_id, fields, method, trace_id FROM pii_audit_log WHERE customer_id = :c ORDER BY seq"
            ),
            {"c": customer_id},
        )
        return [dict(row._mapping) for row in result]


async def test_unmasked_reads_are_audited_masked_reads_are_not(client: Client, db: AsyncEngine) -> None:
    c = await client.create()
    await client.get(c.customer_id)  # masked
    assert await audit_rows(db, c.customer_id) == []
    await client.get(c.customer_id, md=PII_READER)
    await client.stub.ListCustomers(customer_pb2.ListCustomersRequest(page_size=1000), metadata=PII_READER, timeout=10)
    rows = await audit_rows(db, c.customer_id)
    assert [r["method"] for r in rows] == ["GetCustomer", "ListCustomers"]
    assert {r["client_id"] for r in rows} == {"kyc-officer"}
    assert rows[0]["fields"] == "full_name,birth_date,national_id,mobile,email"
    assert all(len(r["trace_id"]) == 32 for r in rows)


async def test_audit_log_is_append_only(client: Client, db: AsyncEngine) -> None:
    c = await client.create()
    await client.get(c.customer_id, md=PII_READER)
    for statement in ("UPDATE pii_audit_log SET client_id = 'x' WHERE customer_id = :c",
                      "DELETE FROM pii_audit_log WHERE customer_id = :c"):  # fmt: skip
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.begin() as conn:
                await conn.execute(text(statement), {"c": c.customer_id})


async def _as_dba(db: AsyncEngine, backend: str, statement: str, params: dict) -> None:
    """What someone with DDL rights could do: bypass the append-only trigger for one statement."""
    async with db.begin() as conn:
        if backend == "postgresql":
            await conn.execute(text("ALTER TABLE pii_audit_log DISABLE TRIGGER pii_audit_log_append_only"))
            await conn.execute(text(statement), params)
            await conn.execute(text("ALTER TABLE pii_audit_log ENABLE TRIGGER pii_audit_log_append_only"))
        else:
            await conn.execute(text("DROP TRIGGER pii_audit_log_no_update"))
            await conn.execute(text(statement), params)
            await conn.execute(
                text(
                    "CREATE TRIGGER pii_audit_log_no_update BEFORE UPDATE ON pii_audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'pii_audit_log is append-only'); END"
                )
            )


async def test_verify_command_detects_a_tampered_row(
    client: Client, db: AsyncEngine, customer_service: RunningService
) -> None:
    c = await client.create(person())
    await client.get(c.customer_id, md=PII_READER)
    await client.get(c.customer_id, md=PII_READER)
    ok = verify_audit(customer_service)
    assert ok.returncode == 0, ok.stderr
    assert "audit chain OK" in ok.stdout

    [first, _] = await audit_rows(db, c.customer_id)
    change = "UPDATE pii_audit_log SET client_id = :who WHERE seq = :seq"
    await _as_dba(db, customer_service.backend, change, {"who": "someone-innocent", "seq": first["seq"]})
    try:
        broken = verify_audit(customer_service)
        assert broken.returncode == 1
        assert f"BROKEN at seq {first['seq']}" in broken.stderr and "does not match its hash" in broken.stderr
    finally:  # put it back: the chain (shared by this module's service) verifies again
        await _as_dba(db, customer_service.backend, change, {"who": first["client_id"], "seq": first["seq"]})
    assert (await verify_database(customer_service.database_url)).ok  # in-process: the same check, faster
