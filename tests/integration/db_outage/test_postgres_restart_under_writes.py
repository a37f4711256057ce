"""PostgreSQL killed (immediate stop) and kept down for 10 s under a steady flow of writes through
the real HTTP gateway to the real customer service, then started again.

Channel apps POST /v1/customers with an Idempotency-Key and retry a 503/504 with the same key
until it is acknowledged (what a channel that rightly retries only 503/504 does). Over the whole
run: no 500 at all; while the database is down only 503 (reason DATABASE_UNAVAILABLE) or 504;
the first write succeeds within 2 s of PostgreSQL accepting connections again, and none fails
after it; every acknowledged write exists exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from devtools import stack
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from tests.support.procs import ServiceProcess

from .conftest import Timeline, customer_json, internal_logs, log_dir, service_env, unavailable_logs, until_accepting

pytestmark = pytest.mark.timeout(240)

WRITERS = 4
DOWN_S = 10.0
WARM_S = 2.0
AFTER_S = 3.0
RETRY_PAUSE_S = 0.1
#: From PostgreSQL accepting connections again to the first acknowledged write.
FIRST_SUCCESS_WITHIN_S = 2.0


@dataclass(frozen=True)
class Attempt:
    key: str
    sent: float
    done: float
    status: int
    reason: str


def _reason(response: httpx.Response) -> str:
    try:
        details = response.json().get("details") or []
    except ValueError:
        return "<not json>"
    return str(details[0].get("reason", "")) if details else ""


class Writers:
    """``WRITERS`` channel apps, each writing customers one after the other, retrying a 503/504
    with the same Idempotency-Key until the write is acknowledged."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.attempts: list[Attempt] = []
        self.acked: dict[str, str] = {}  # Idempotency-Key → customer_id
        self.stopping = asyncio.Event()
        token = mint_token(DEV_SECRET, ALL_SCOPES, client_id="outage-channel")
        self.headers = {"authorization": f"Bearer {token}"}

    async def run(self) -> None:
        await asyncio.gather(*(self._writer() for _ in range(WRITERS)))

    async def _writer(self) -> None:
        while not self.stopping.is_set():
            await self._write_until_acknowledged(f"outage-{uuid.uuid4().hex}", customer_json())
            await asyncio.sleep(0.02)

    async def _write_until_acknowledged(self, key: str, body: dict[str, Any]) -> None:
        headers = {**self.headers, "idempotency-key": key}
        give_up = time.monotonic() + DOWN_S + 20
        while time.monotonic() < give_up:
            sent = time.monotonic()
            response = await self.client.post("/v1/customers", json=body, headers=headers)
            ok = response.status_code == 200
            self.attempts.append(
                Attempt(key, sent, time.monotonic(), response.status_code, "" if ok else _reason(response))
            )
            if ok:
                self.acked[key] = response.json()["customerId"]
                return
            if response.status_code not in (503, 504):
                return  # not retried: the assertions report it
            await asyncio.sleep(RETRY_PAUSE_S)
        raise AssertionError(f"write {key} never acknowledged")


async def test_postgres_killed_and_down_10s_under_gateway_writes_gives_no_500_recovers_within_2s_and_loses_no_write(
    own_pg: stack.PostgresServer, kafka_server: stack.KafkaLike, tmp_path: Path
) -> None:
    logs = log_dir(tmp_path)
    url = own_pg.create_database("customer")
    customer = ServiceProcess("customer", env=service_env(kafka_server.bootstrap_servers, url), log_dir=logs)
    gateway = ServiceProcess(
        "gateway",
        env={
            "ZT_CUSTOMER_TARGET": "",  # set below, once the customer service has its port
            "ZT_PRODUCT_TARGET": "127.0.0.1:1",  # not used by this test
            "ZT_DATAHUB_TARGET": "127.0.0.1:1",
            "ZT_QUOTA_WRITES_RPS": "10000",  # quotas are not what this test is about
            "ZT_QUOTA_WRITES_BURST": "10000",
        },
        log_dir=logs,
    )
    customer.start(120)
    try:
        gateway.env["ZT_CUSTOMER_TARGET"] = customer.target
        gateway.start(60)
        async with httpx.AsyncClient(base_url=f"http://{gateway.target}", timeout=15) as client:
            writers = Writers(client)
            t = Timeline()
            flow = asyncio.create_task(writers.run())
            await asyncio.sleep(WARM_S)
            t.mark("kill")
            await asyncio.to_thread(own_pg.halt, "immediate")
            t.mark("down")
            await asyncio.sleep(DOWN_S)
            t.mark("start")
            await asyncio.to_thread(own_pg.resume, wait=False)
            accepted = await until_accepting(own_pg)
            t.marks["accepting"] = accepted
            await asyncio.sleep(AFTER_S)
            writers.stopping.set()
            await asyncio.wait_for(flow, 30)
            t.mark("end")
        attempts = writers.attempts
        print(f"\ntimeline: {t}; {len(attempts)} attempts, {len(writers.acked)} writes acknowledged")

        # 0 × 500 (nor anything but 200/503/504) over the whole run.
        statuses = sorted({a.status for a in attempts})
        assert set(statuses) <= {200, 503, 504}, [a for a in attempts if a.status not in (200, 503, 504)][:5]
        failed = [a for a in attempts if a.status != 200]
        assert {a.reason for a in failed if a.status == 503} <= {"DATABASE_UNAVAILABLE"}, failed[:5]
        # Before the kill every write succeeded; while the database was down every one failed.
        # "Down" ends when PostgreSQL is started again, not when the probe's own connection
        # first gets through: the service can reach it a few tens of ms before the probe does.
        assert all(a.status == 200 for a in attempts if a.done < t.marks["kill"])
        while_down = [a for a in attempts if t.marks["down"] <= a.sent and a.done <= t.marks["start"]]
        assert len(while_down) >= 4 * WRITERS, "the flow of writes did not go on while PostgreSQL was down"
        assert [a for a in while_down if a.status not in (503, 504)] == []
        # The first write after PostgreSQL accepts connections again succeeds within 2 s, and no
        # write fails after it (no pooled connection from before the outage is handed out again).
        first = min(a.done for a in attempts if a.status == 200 and a.sent >= t.marks["kill"])
        print(
            f"first success {first - accepted:+.3f}s after PostgreSQL accepted connections "
            f"({first - t.marks['start']:+.3f}s after it was started); "
            f"{len(failed)} failed attempts: {sum(a.status == 503 for a in failed)} × 503, "
            f"{sum(a.status == 504 for a in failed)} × 504; "
            f"failures after the first success: {[a for a in failed if a.done > first]}"
        )
        assert first - accepted <= FIRST_SUCCESS_WITHIN_S
        assert [a for a in failed if a.sent >= first] == []
        assert all(a.status == 200 for a in attempts if a.sent >= accepted + FIRST_SUCCESS_WITHIN_S)

        # Every acknowledged write exists exactly once (retries with the key were replays).
        conn = await asyncpg.connect(stack._asyncpg_dsn(url))
        try:
            stored = [r["customer_id"] for r in await conn.fetch("SELECT customer_id FROM customers")]
        finally:
            await conn.close()
        acknowledged = list(writers.acked.values())
        assert len(set(acknowledged)) == len(acknowledged), "two keys acknowledged with the same customer"
        assert sorted(stored) == sorted(acknowledged), "stored customers differ from the acknowledged writes"
        assert len({a.key for a in attempts}) == len(writers.acked), "a write was left unacknowledged"

        # The service said why, as a warning without a stack trace; nothing became INTERNAL.
        assert internal_logs(customer) == []
        warnings = unavailable_logs(customer)
        assert warnings and all(w["level"] == "warning" and "exception" not in w for w in warnings)
        assert "gateway request failed" not in gateway.log_text()
        assert t.marks["end"] - t.t0 < 40
    finally:
        gateway.stop()
        customer.stop()
