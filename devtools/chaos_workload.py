"""The chaos suite's channel workload: customers onboarded, verified, subscribed, credited and
debited, and their views read — through the gateway replicas, as a channel app does it.

Bounded in count and time. Every write carries an Idempotency-Key; a request that gets a 429,
502, 503, 504 or no answer (connection refused or reset, timeout) is sent again with the same
key, to the other gateway, with back-off, for up to ``retry_budget_s``. Like a load balancer's
passive health check, a gateway that gave no answer is skipped for ``eject_s``. What the client
saw is recorded: every attempt's status, the operations that failed for good, and the
acknowledged writes (customers, subscriptions with their opening amount, postings), which the
invariants are checked against.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

from devtools.synth import national_id
from services.kit.auth import ALL_SCOPES, mint_token

RETRY_STATUSES = {429, 502, 503, 504}
#: Journeys are numbered across every workload of a process: each is a different person.
_JOURNEYS = itertools.count()
CURRENCY = "CNY"


@dataclass
class Ledger:
    """What the client was told succeeded."""

    customers: set[str] = field(default_factory=set)
    #: subscription id → (customer id, opening minor units)
    subscriptions: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: transaction id → (subscription id, signed minor units)
    postings: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: CheckEligibility answers right after an acknowledged KYC approval, and the refusals among
    #: them (customer id: reason codes) — read-your-writes, ADR 0061: there should be none
    checked_after_approval: int = 0
    refused_after_approval: list[str] = field(default_factory=list)

    def expected_balances(self) -> dict[str, int]:
        balances = {sub: opening for sub, (_c, opening) in self.subscriptions.items()}
        for sub, amount in self.postings.values():
            balances[sub] = balances.get(sub, 0) + amount
        return balances


@dataclass(frozen=True)
class Attempt:
    """One request of an operation (retries are further attempts of the same ``op``)."""

    op: int
    method: str
    started: float
    ended: float
    status: str
    ok: bool


@dataclass
class Stats:
    """What the client saw: attempts by status, failures for good, a timeline of outcomes."""

    statuses: Counter[str] = field(default_factory=Counter)
    #: attempts of writes (POST) that were refused or got no answer, by status
    write_refusals: Counter[str] = field(default_factory=Counter)
    failed_for_good: list[str] = field(default_factory=list)
    operations: int = 0
    #: (monotonic time, succeeded) of every attempt
    timeline: list[tuple[float, bool]] = field(default_factory=list)
    #: every write attempt (POST), with when it was sent and answered
    write_attempts: list[Attempt] = field(default_factory=list)

    def record(self, status: str, ok: bool) -> None:
        self.statuses[status] += 1
        self.timeline.append((time.monotonic(), ok))

    def writes_in_flight(self, moment: float) -> list[tuple[Attempt, list[Attempt]]]:
        """The write attempts sent before ``moment`` and answered after it, each with the later
        attempts of its operation (the client's retries, same Idempotency-Key)."""
        spanning = [a for a in self.write_attempts if a.started < moment < a.ended]
        return [(a, [b for b in self.write_attempts if b.op == a.op and b.started > a.started]) for a in spanning]

    @property
    def writes_failed_for_good(self) -> list[str]:
        """Failures for good of everything but the view reads (eligibility checks included: they
        never wait for Kafka)."""
        return [f for f in self.failed_for_good if not f.startswith("GET ")]

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def last_failure_s(self, fault_at: float) -> float | None:
        """Seconds from the fault to the last failed attempt (None: no attempt failed)."""
        failures = [t for t, ok in self.timeline if t >= fault_at and not ok]
        return max(failures) - fault_at if failures else None

    def first_success_after(self, moment: float) -> float | None:
        return next((t - moment for t, ok in self.timeline if ok and t >= moment), None)


class Client:
    """Requests through the gateways, alternating, retried as described above."""

    def __init__(
        self, gateways: list[str], *, retry_budget_s: float = 30.0, timeout_s: float = 5.0, eject_s: float = 2.0
    ) -> None:
        self._clients = [httpx.AsyncClient(base_url=g, timeout=timeout_s) for g in gateways]
        self._next = itertools.cycle(range(len(gateways)))
        self._ejected_until = [0.0] * len(gateways)
        self._eject = eject_s
        self._budget = retry_budget_s
        token = mint_token(_secret(), list(ALL_SCOPES), client_id="chaos-app", ttl_s=3 * 3600)
        self._auth = {"authorization": f"Bearer {token}", "x-timeout-ms": str(int(timeout_s * 1000))}
        self.stats = Stats()

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()

    async def send(
        self, method: str, path: str, body: Any = None, *, key: bool = True, read: bool = False
    ) -> dict[str, Any] | None:
        """The JSON answer, or None when the operation failed for good. ``read``: a POST that
        changes nothing (CheckEligibility) — no Idempotency-Key, not counted among the writes."""
        write = method != "GET" and not read
        headers = dict(self._auth)
        if key and write:
            headers["idempotency-key"] = f"chaos-{uuid.uuid4().hex}"
        self.stats.operations += 1
        op = self.stats.operations
        give_up = time.monotonic() + self._budget
        pause = 0.1
        while True:
            index = self._pick()
            started = time.monotonic()
            try:
                response = await self._clients[index].request(method, path, json=body, headers=headers)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                response, status = None, f"no answer ({type(exc).__name__})"
                self._ejected_until[index] = time.monotonic() + self._eject
            ok = response is not None and response.status_code == 200
            self.stats.record(status, ok)
            if write:
                self.stats.write_attempts.append(Attempt(op, method, started, time.monotonic(), status, ok))
            if not ok and write:
                self.stats.write_refusals[status] += 1
            if ok:
                assert response is not None
                return response.json()  # type: ignore[no-any-return]
            retriable = response is None or response.status_code in RETRY_STATUSES
            if not retriable or time.monotonic() + pause > give_up:
                detail = response.text[:200] if response is not None else status
                self.stats.failed_for_good.append(f"{method} {path}: {status} {detail}")
                return None
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 1.0)

    def _pick(self) -> int:
        """The next gateway in turn that is not ejected (any, if all are)."""
        now = time.monotonic()
        for _ in self._clients:
            index = next(self._next)
            if self._ejected_until[index] <= now:
                return index
        return next(self._next)


def _secret() -> str:
    import os

    from services.cli import DEV_SECRET

    return os.environ.get("ZT_AUTH_HS256_SECRET", DEV_SECRET)


def _letters(n: int) -> str:
    """0 → "A", 25 → "Z", 26 → "BA": names may hold letters only."""
    out = ""
    while True:
        n, rest = divmod(n, 26)
        out = chr(ord("A") + rest) + out
        if not n:
            return out.capitalize()


def _money(minor: int) -> dict[str, Any]:
    units, cents = divmod(minor, 100)
    return {"currencyCode": CURRENCY, "units": str(units), "nanos": cents * 10_000_000}


async def create_product(client: Client) -> str:
    product = {
        "displayName": "Chaos Deposit",
        "type": "TYPE_DEPOSIT",
        "riskLevel": "RISK_LEVEL_R1",
        "terms": {
            "currencyCode": CURRENCY,
            "minAmount": {"currencyCode": CURRENCY, "units": "100"},
            "maxAmount": {"currencyCode": CURRENCY, "units": "1000000"},
            "termMonths": 12,
            "annualRateBps": 250,
        },
        "eligibility": {"minAge": 18, "maxAge": 80},
    }
    created = await client.send("POST", "/v1/products", product)
    if created is None:
        raise RuntimeError(f"could not create the product: {client.stats.failed_for_good[-1:]}")
    product_id = str(created["productId"])
    if await client.send("POST", f"/v1/products/{product_id}:publish", {}) is None:
        raise RuntimeError("could not publish the product")
    return product_id


@dataclass
class Workload:
    """Journeys of ``postings`` each, ``concurrency`` at a time, until ``stop`` is set."""

    client: Client
    product_id: str
    ledger: Ledger = field(default_factory=Ledger)
    concurrency: int = 4
    postings: int = 6
    view_reads: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async def worker() -> None:
            while not stop.is_set():
                await self.journey(next(_JOURNEYS))

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def journey(self, n: int) -> None:
        rng = random.Random(n)
        born = date(1960, 1, 1) + timedelta(days=n % 12_000)
        person = {
            "fullName": f"Chaos {_letters(n)}",
            "birthDate": {"year": born.year, "month": born.month, "day": born.day},
            "nationalId": national_id(rng, born),
            "mobile": f"139{(n * 7919 + uuid.uuid4().int) % 100_000_000:08d}",
            "email": f"chaos.{n}.{uuid.uuid4().hex[:6]}@example.com",
        }
        created = await self.client.send("POST", "/v1/customers", person)
        if created is None:
            return
        customer = str(created["customerId"])
        self.ledger.customers.add(customer)
        if await self.client.send("POST", f"/v1/customers/{customer}:verify", {"outcome": "OUTCOME_APPROVED"}) is None:
            return
        await self.check_after_approval(customer)
        opening = 200_000 + rng.randint(0, 900) * 100  # never overdrawn by the debits below
        body = {"productId": self.product_id, "amount": _money(opening)}
        sub = await self.client.send("POST", f"/v1/customers/{customer}/subscriptions", body)
        if sub is None:
            return
        sub_id = str(sub["subscriptionId"])
        self.ledger.subscriptions[sub_id] = (customer, opening)
        for i in range(self.postings):
            credit = i % 2 == 0
            amount = rng.randint(1, 500) * 100
            body = {"direction": "DIRECTION_CREDIT" if credit else "DIRECTION_DEBIT", "amount": _money(amount)}
            posted = await self.client.send(
                "POST", f"/v1/customers/{customer}/subscriptions/{sub_id}/transactions", body
            )
            if posted is not None:
                self.ledger.postings[str(posted["transactionId"])] = (sub_id, amount if credit else -amount)
        await self.client.send("GET", f"/v1/customers/{customer}/view")
        self.view_reads += 1

    async def check_after_approval(self, customer: str) -> None:
        """What a channel does next: which products may the customer open now? Every customer of
        the journeys is of an age the product takes, so the answer must be yes."""
        path = f"/v1/products/{self.product_id}:checkEligibility"
        answer = await self.client.send("POST", path, {"customerId": customer}, read=True)
        if answer is None:
            return  # (failed for good: counted there)
        self.ledger.checked_after_approval += 1
        if not answer.get("eligible"):
            codes = ",".join(str(r.get("code")) for r in answer.get("reasons", []))
            self.ledger.refused_after_approval.append(f"{customer}: {codes}")
