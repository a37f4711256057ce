"""Seeded synthetic bank data: customers, products, subscriptions and months of transactions.

Two ways to use it:

- **bulk events** (benchmarks, tests): ``Synth(seed=7, customers=1000, months=6).events()`` gives
  the events the customer and product services would publish — the generated event messages,
  per-aggregate versions, deterministic event ids — ordered by time; ``records()`` wraps them
  with :func:`services.kit.events.build_record` for an idempotent producer.
- **through the gRPC APIs** (demo data): :func:`seed_via_grpc` creates products, customers,
  KYC, risk assessments, subscriptions and a few transactions with a dev token; the services
  emit the events themselves. (Transactions posted this way are dated now: back-dated months
  exist only in the bulk-event form.) ``zhongtai demo-data`` calls :func:`demo_main`.

Shapes: most customers are *steady* (a stable monthly rhythm), some *growing*, some are
*fading* towards churn (activity and balances decay over the last months, a holding may be
closed), some are *dormant* (nothing for the last half year), some *new*, a few never pass KYC
or close their relationship. The same seed and ``now`` give the same data, byte for byte.

    python -m devtools.synth --customers 1000 --months 6 --seed 7 --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import money_pb2

from bank.customer.v1 import customer_pb2
from bank.customer.v1 import events_pb2 as cev
from bank.product.v1 import events_pb2 as pev
from bank.product.v1 import product_pb2
from services.kit.events import KafkaRecord, ReceivedEvent, build_record

CUSTOMER_SOURCE = "zhongtai/customer"
PRODUCT_SOURCE = "zhongtai/product"
CURRENCY = "CNY"

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
AREAS = ("110101", "310104", "440305", "330106", "510107", "320102")
PROFILES = (
    ("steady", 0.45),
    ("growing", 0.12),
    ("fading", 0.15),
    ("dormant", 0.08),
    ("new", 0.1),
    ("pending", 0.04),
    ("rejected", 0.02),
    ("closed", 0.04),
)


def ts(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


def fast_ts(when: datetime) -> Timestamp:
    """``ts`` for aware datetimes, without its conversions (a third of a big history's time)."""
    return Timestamp(seconds=int(when.timestamp()), nanos=when.microsecond * 1000)


def money(minor: int, currency: str = CURRENCY) -> money_pb2.Money:
    units, cents = divmod(minor, 100)
    return money_pb2.Money(currency_code=currency, units=units, nanos=cents * 10_000_000)


def national_id(rng: random.Random, birth: date) -> str:
    """A mainland resident ID with a valid GB 11643 check digit."""
    body = f"{rng.choice(AREAS)}{birth:%Y%m%d}{rng.randint(0, 999):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
    return body + check


@dataclass(frozen=True)
class SynthEvent:
    """One event as a service would publish it."""

    payload: Message
    source: str
    aggregate_type: str
    aggregate_id: str
    version: int
    time: datetime
    event_id: str

    def received(self) -> ReceivedEvent:
        """As a consumer decodes it (what the hub's fold takes)."""
        return ReceivedEvent(
            id=self.event_id,
            type=self.payload.DESCRIPTOR.full_name,
            source=self.source,
            subject=self.aggregate_id,
            time=self.time,
            aggregate_type=self.aggregate_type,
            aggregate_id=self.aggregate_id,
            version=self.version,
            message=self.payload,
        )

    def record(self) -> KafkaRecord:
        return build_record(
            self.payload,
            source=self.source,
            aggregate_type=self.aggregate_type,
            aggregate_id=self.aggregate_id,
            version=self.version,
            event_id=self.event_id,
            time=self.time,
        )


@dataclass
class _Customer:
    customer_id: str
    profile: str
    birth: date
    name: str
    nid: str
    mobile: str
    email: str
    created: datetime
    tolerance: int = 0
    version: int = 0
    status: int = 1
    kyc: bool = False
    expire: datetime | None = None
    subs: list[_Sub] = field(default_factory=list)


@dataclass
class _Sub:
    subscription_id: str
    product: product_pb2.Product
    opened: datetime
    balance: int
    version: int = 1
    closed: datetime | None = None


def catalogue(now: datetime) -> list[product_pb2.Product]:
    """A small catalogue: deposits, a card, a loan and wealth products R1..R5."""
    specs = [
        ("dep-current", "活期存款 Current account", 1, 1, 0, 0, 0),
        ("dep-term-12m", "定期存款 12 months", 1, 1, 12, 18, 0),
        ("card-classic", "信用卡 Classic", 4, 2, 0, 18, 65),
        ("loan-personal", "个人消费贷 Personal loan", 2, 2, 36, 22, 60),
        ("wm-cash-r1", "现金管理 R1", 3, 1, 0, 18, 0),
        ("wm-bond-r2", "债券基金 R2", 3, 2, 6, 18, 0),
        ("wm-mixed-r3", "混合基金 R3", 3, 3, 12, 18, 70),
        ("wm-equity-r4", "股票基金 R4", 3, 4, 12, 18, 65),
        ("wm-pe-r5", "私募股权 R5", 3, 5, 36, 30, 60),
    ]
    products = []
    for pid, name, ptype, risk, term, min_age, max_age in specs:
        products.append(
            product_pb2.Product(
                product_id=pid,
                display_name=name,
                type=ptype,  # type: ignore[arg-type]
                risk_level=risk,  # type: ignore[arg-type]
                state=product_pb2.Product.STATE_ACTIVE,
                version=2,
                terms=product_pb2.Product.Terms(
                    currency_code=CURRENCY, min_amount=money(100), term_months=term, annual_rate_bps=150 + 100 * risk
                ),
                eligibility=product_pb2.Product.Eligibility(min_age=min_age, max_age=max_age),
                publish_time=ts(now - timedelta(days=800)),
            )
        )
    return products


class Synth:
    """Reproducible generator; ``events()`` is deterministic for (seed, customers, months, now, prefix)."""

    def __init__(
        self,
        *,
        seed: int = 7,
        customers: int = 100,
        months: int = 6,
        now: datetime | None = None,
        prefix: str = "c",
        txn_scale: float = 1.0,
    ) -> None:
        self.seed = seed
        self.n = customers
        self.months = months
        self.now = (now or datetime(2025, 6, 30, 12, tzinfo=UTC)).astimezone(UTC)
        self.prefix = prefix
        self.txn_scale = txn_scale
        self.products = catalogue(self.now)
        self._rng = random.Random(seed)
        self._ids = random.Random(f"{seed}:{prefix}")

    def _id(self) -> str:
        # Ids come from their own stream seeded with the prefix too: two data sets that differ
        # only by prefix must not share event ids (consumers' inboxes would drop the second).
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _snapshot(self, c: _Customer, update: datetime) -> cev.CustomerSnapshot:
        snap = cev.CustomerSnapshot(
            customer_id=c.customer_id,
            full_name_masked=c.name[0] + "*",
            national_id_masked=c.nid[:6] + "********" + c.nid[-4:],
            mobile_masked=c.mobile[:3] + "****" + c.mobile[-4:],
            email_masked=(c.email[0] + "***" + c.email[c.email.index("@") :]) if c.email else "",
            birth_year=c.birth.year,
            national_id_blind_index=uuid.uuid5(uuid.NAMESPACE_OID, c.nid).hex,
            status=c.status,  # type: ignore[arg-type]
            kyc_verified=c.kyc,
            risk_tolerance=c.tolerance,  # type: ignore[arg-type]
            version=c.version,  # type: ignore[arg-type]
            create_time=ts(c.created),
            update_time=ts(update),
        )
        if c.expire is not None:
            snap.risk_tolerance_expire_time.CopyFrom(ts(c.expire))
        return snap

    def _customer_event(self, cls: Any, c: _Customer, when: datetime, **extra: Any) -> SynthEvent:
        c.version += 1
        msg = cls(
            customer_id=c.customer_id, customer=self._snapshot(c, when), version=c.version, occur_time=ts(when), **extra
        )
        return SynthEvent(msg, CUSTOMER_SOURCE, "customer", c.customer_id, c.version, when, self._id())

    def _sub_snapshot(self, c: _Customer, s: _Sub, amount: int, when: datetime) -> product_pb2.Subscription:
        sub = product_pb2.Subscription(
            subscription_id=s.subscription_id,
            customer_id=c.customer_id,
            product_id=s.product.product_id,
            product_type=s.product.type,
            amount=money(amount),
            balance=money(s.balance),
            state=product_pb2.Subscription.STATE_CLOSED if s.closed else product_pb2.Subscription.STATE_OPEN,
            create_time=ts(s.opened),
            update_time=ts(when),
            version=s.version,
        )
        if s.closed:
            sub.close_time.CopyFrom(ts(s.closed))
        return sub

    def catalogue_events(self) -> list[SynthEvent]:
        """The catalogue as published (ProductPublished, 800 days before ``now``)."""
        when = self.now - timedelta(days=800)
        return [
            SynthEvent(
                pev.ProductPublished(product_id=p.product_id, product=p, version=2, occur_time=ts(when)),
                PRODUCT_SOURCE,
                "product",
                p.product_id,
                2,
                when,
                self._id(),
            )
            for p in self.products
        ]

    def events(self) -> list[SynthEvent]:
        rng = self._rng = random.Random(self.seed)
        self._ids = random.Random(f"{self.seed}:{self.prefix}")
        out = self.catalogue_events()
        start = self.now - timedelta(days=30 * self.months)
        names, weights = zip(*PROFILES, strict=True)
        for i in range(self.n):
            profile = rng.choices(names, weights)[0]
            birth = date(rng.randint(1950, 2003), rng.randint(1, 12), rng.randint(1, 28))
            if profile == "new":
                created = self.now - timedelta(days=rng.uniform(3, 60))
            else:
                created = start - timedelta(days=rng.uniform(30, 1500))
            nid = national_id(rng, birth)
            mobile = f"1{rng.choice('3589')}{rng.randint(0, 999_999_999):09d}"
            c = _Customer(
                f"{self.prefix}-{self.seed}-{i:06d}",
                profile,
                birth,
                rng.choice(SURNAMES) + "某",
                nid,
                mobile,
                f"user{i}@example.com" if rng.random() < 0.7 else "",
                created,
            )
            out.append(self._customer_event(cev.CustomerCreated, c, created))
            if profile == "pending":
                continue
            verified = created + timedelta(hours=rng.uniform(1, 48))
            if profile == "rejected":
                c.status = 4
                out.append(self._customer_event(cev.CustomerRejected, c, verified, reason="documents"))
                continue
            c.status, c.kyc = 2, True
            out.append(self._customer_event(cev.CustomerVerified, c, verified))
            # Re-assessed within the last two years (tolerance expires after two), some long ago.
            assessed = max(verified + timedelta(hours=1), self.now - timedelta(days=rng.uniform(20, 800)))
            c.tolerance = rng.choices((1, 2, 3, 4, 5), (15, 30, 30, 17, 8))[0]
            c.expire = assessed + timedelta(days=365 * 2)
            out.append(
                self._customer_event(
                    cev.CustomerRiskAssessed,
                    c,
                    assessed,
                    questionnaire_score=c.tolerance * 20 - 5,
                    previous_risk_tolerance=0,
                )
            )
            out.extend(self._holdings(c, assessed, start))
            if profile == "closed":
                when = self.now - timedelta(days=rng.uniform(5, 60))
                c.status = 3
                out.append(self._customer_event(cev.CustomerClosed, c, when, reason="customer request"))
        out.sort(key=lambda e: (e.time, e.aggregate_id, e.version))
        return out

    def _holdings(self, c: _Customer, since: datetime, start: datetime) -> Iterator[SynthEvent]:
        rng = self._rng
        age = self.now.year - c.birth.year
        wanted = [self.products[0]]
        if rng.random() < 0.5:
            wanted.append(self.products[1])
        wealth = [
            p
            for p in self.products
            if p.type == 3
            and p.risk_level <= c.tolerance
            and (not p.eligibility.max_age or age <= p.eligibility.max_age)
            and age >= p.eligibility.min_age
        ]
        if wealth and rng.random() < 0.6:
            wanted.append(rng.choice(wealth))
        big = rng.random() < 0.15
        for product in wanted:
            opened = max(since, start - timedelta(days=rng.uniform(0, 365))) + timedelta(hours=rng.uniform(1, 72))
            amount = int(rng.lognormvariate(math.log(2_000_000 if big else 200_000), 0.8))  # minor units
            s = _Sub(self._id(), product, opened, amount)
            c.subs.append(s)
            yield SynthEvent(
                pev.SubscriptionOpened(
                    customer_id=c.customer_id,
                    subscription_id=s.subscription_id,
                    subscription=self._sub_snapshot(c, s, amount, opened),
                    version=1,
                    occur_time=ts(opened),
                ),
                PRODUCT_SOURCE,
                "subscription",
                s.subscription_id,
                1,
                opened,
                self._id(),
            )
            yield from self._transactions(c, s, amount, start)

    def _rate(self, profile: str, day_frac: float) -> float:
        """Expected transactions per day at position day_frac (0 = start, 1 = now) of the window."""
        base = {"steady": 0.35, "growing": 0.2, "fading": 0.4, "dormant": 0.3, "new": 0.3, "closed": 0.2}.get(
            profile, 0.0
        )
        if profile == "growing":
            return base * (1 + 2 * day_frac)
        if profile == "fading":
            return base * (1.0 if day_frac < 0.6 else max(0.0, 1 - (day_frac - 0.6) * 2.4))
        if profile == "dormant":
            return 0.0  # nothing in the whole window: the last activity predates it
        if profile == "closed":
            return base if day_frac < 0.8 else 0.0
        return base

    def _transactions(self, c: _Customer, s: _Sub, amount: int, start: datetime) -> Iterator[SynthEvent]:
        rng = self._rng
        day = max(s.opened, start)
        total = (self.now - start).total_seconds() or 1.0
        # A fading customer may close their last holding: nothing is posted to it afterwards.
        close_at: datetime | None = None
        if c.profile == "fading" and len(c.subs) > 1 and s is c.subs[-1] and rng.random() < 0.7:
            close_at = self.now - timedelta(days=rng.uniform(3, 40))
            if close_at <= s.opened:
                close_at = None
        while True:
            day += timedelta(hours=rng.uniform(6, 30))
            if day >= (close_at or self.now):
                break
            frac = (day - start).total_seconds() / total
            if rng.random() > min(1.0, self._rate(c.profile, frac) * self.txn_scale):
                continue
            fading = c.profile == "fading" and frac > 0.6
            credit = rng.random() < (0.25 if fading else 0.55)
            value = max(100, int(rng.lognormvariate(math.log(max(amount, 10_000) * 0.08), 0.7)))
            if fading and not credit:
                value = max(value, s.balance // 3)
            if not credit:
                value = min(value, s.balance)
                if value <= 0:
                    continue
            yield self._txn_event(c, s, day, value, credit)
        if close_at is not None:
            yield self._close_event(c, s, close_at, amount)

    def _txn_event(self, c: _Customer, s: _Sub, when: datetime, value: int, credit: bool) -> SynthEvent:
        """Post ``value`` to ``s`` (its balance and version move on) as the product service would."""
        s.balance += value if credit else -value
        s.version += 1
        txn = product_pb2.Transaction(
            transaction_id=self._id(),
            subscription_id=s.subscription_id,
            customer_id=c.customer_id,
            direction=1 if credit else 2,  # type: ignore[arg-type]
            amount=money(value),
            balance_after=money(s.balance),
            post_time=fast_ts(when),
        )
        msg = pev.TransactionPosted(
            customer_id=c.customer_id,
            subscription_id=s.subscription_id,
            product_id=s.product.product_id,
            product_type=s.product.type,
            transaction=txn,
            version=s.version,
            occur_time=fast_ts(when),
        )
        return SynthEvent(msg, PRODUCT_SOURCE, "subscription", s.subscription_id, s.version, when, self._id())

    def _close_event(self, c: _Customer, s: _Sub, when: datetime, amount: int) -> SynthEvent:
        s.closed, s.version = when, s.version + 1
        msg = pev.SubscriptionClosed(
            customer_id=c.customer_id,
            subscription_id=s.subscription_id,
            subscription=self._sub_snapshot(c, s, amount, when),
            version=s.version,
            occur_time=ts(when),
        )
        return SynthEvent(msg, PRODUCT_SOURCE, "subscription", s.subscription_id, s.version, when, self._id())

    def records(self) -> list[KafkaRecord]:
        return [e.record() for e in self.events()]


async def produce(records: list[KafkaRecord], bootstrap: str, *, client_id: str = "synth") -> float:
    """Send records with an idempotent producer; returns seconds taken (all acked)."""
    import time

    from services.kit.kafka import make_producer

    producer = make_producer(bootstrap, client_id=client_id, linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(r.topic, value=r.value, key=r.key, headers=r.headers) for r in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


# --------------------------------------------------------------------------------------------
# Through the services' gRPC APIs
# --------------------------------------------------------------------------------------------


async def seed_via_grpc(
    customer_target: str,
    product_target: str,
    token: str,
    *,
    customers: int = 20,
    seed: int = 7,
    transactions_per_customer: int = 5,
    timeout_s: float = 5.0,
) -> dict[str, int]:
    """Create the catalogue, customers (KYC, risk), subscriptions and transactions via gRPC."""
    import grpc

    from bank.customer.v1 import customer_pb2_grpc
    from bank.product.v1 import product_pb2_grpc
    from services.kit.grpc_server import client_channel

    meta = (("authorization", f"Bearer {token}"),)
    counts = {"products": 0, "customers": 0, "subscriptions": 0, "transactions": 0}
    now = datetime.now(UTC)
    async with client_channel(customer_target) as cch, client_channel(product_target) as pch:
        customers_api = customer_pb2_grpc.CustomerServiceStub(cch)
        products_api = product_pb2_grpc.ProductServiceStub(pch)
        for p in catalogue(now):
            draft = product_pb2.Product(
                product_id=p.product_id,
                display_name=p.display_name,
                type=p.type,
                risk_level=p.risk_level,
                terms=p.terms,
                eligibility=p.eligibility,
            )
            try:
                await products_api.CreateProduct(
                    product_pb2.CreateProductRequest(product=draft, request_id=f"synth-p-{p.product_id}"),
                    metadata=meta,
                    timeout=timeout_s,
                )
                await products_api.PublishProduct(
                    product_pb2.PublishProductRequest(product_id=p.product_id), metadata=meta, timeout=timeout_s
                )
                counts["products"] += 1
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION):
                    raise
        for i in range(customers):
            # One stream per customer: a re-run that skips an already-seeded customer's history
            # still generates exactly the same data (and request ids) for the next one.
            rng = random.Random(f"{seed}:{i}")
            birth = date(rng.randint(1955, 2000), rng.randint(1, 12), rng.randint(1, 28))
            request = customer_pb2.CreateCustomerRequest(
                customer=customer_pb2.Customer(
                    full_name=rng.choice(SURNAMES) + rng.choice("伟芳娜敏静丽强磊军洋"),
                    national_id=national_id(rng, birth),
                    mobile=f"13{rng.randint(0, 999_999_999):09d}",
                    email=f"demo{seed}-{i}@example.com",
                    birth_date=_date_pb(birth),
                ),
                request_id=f"synth-c-{seed}-{i:05d}",
            )
            created = await customers_api.CreateCustomer(request, metadata=meta, timeout=timeout_s)
            counts["customers"] += 1
            cid = created.customer_id
            if rng.random() < 0.1:
                continue  # stays in onboarding
            if created.status != customer_pb2.Customer.STATUS_PENDING:
                continue  # seeded by an earlier run (same seed, same request ids): its history is there
            await customers_api.VerifyCustomer(
                customer_pb2.VerifyCustomerRequest(
                    customer_id=cid, outcome=customer_pb2.VerifyCustomerRequest.OUTCOME_APPROVED
                ),
                metadata=meta,
                timeout=timeout_s,
            )
            await customers_api.AssessRisk(
                customer_pb2.AssessRiskRequest(customer_id=cid, questionnaire_score=rng.randint(5, 95)),
                metadata=meta,
                timeout=timeout_s,
            )
            sub = await products_api.CreateSubscription(
                product_pb2.CreateSubscriptionRequest(
                    customer_id=cid,
                    subscription=product_pb2.Subscription(
                        product_id="dep-current", amount=money(rng.randint(1_000, 500_000) * 100)
                    ),
                    request_id=f"synth-s-{seed}-{i:05d}",
                ),
                metadata=meta,
                timeout=timeout_s,
            )
            counts["subscriptions"] += 1
            for k in range(rng.randint(0, transactions_per_customer)):
                await products_api.PostTransaction(
                    product_pb2.PostTransactionRequest(
                        customer_id=cid,
                        subscription_id=sub.subscription_id,
                        transaction=product_pb2.Transaction(
                            direction=product_pb2.Transaction.DIRECTION_CREDIT,
                            amount=money(rng.randint(10, 5_000) * 100),
                        ),
                        request_id=f"synth-t-{seed}-{i:05d}-{k}",
                    ),
                    metadata=meta,
                    timeout=timeout_s,
                )
                counts["transactions"] += 1
    return counts


def _date_pb(d: date) -> Any:
    from google.type import date_pb2

    return date_pb2.Date(year=d.year, month=d.month, day=d.day)


def demo_main() -> int:
    """Seed a small demo data set through the gRPC APIs (``zhongtai demo-data``)."""
    from services.cli import DEV_SECRET
    from services.kit.auth import mint_token

    secret = os.environ.get("ZT_AUTH_HS256_SECRET", DEV_SECRET)
    token = mint_token(
        secret,
        [
            "customers:write",
            "customers:read",
            "products:admin",
            "products:read",
            "subscriptions:write",
            "subscriptions:read",
        ],
        client_id="demo-data",
    )
    counts = asyncio.run(
        seed_via_grpc(
            os.environ.get("ZT_CUSTOMER_TARGET", "127.0.0.1:50051"),
            os.environ.get("ZT_PRODUCT_TARGET", "127.0.0.1:50052"),
            token,
            customers=int(os.environ.get("ZT_DEMO_CUSTOMERS", "20")),
        )
    )
    print("demo data: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.synth", description=__doc__.split("\n")[0] if __doc__ else ""
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--bootstrap", help="produce the events to this Kafka (else print a summary)")
    parser.add_argument("--grpc", action="store_true", help="seed through the customer/product gRPC APIs instead")
    args = parser.parse_args(argv)
    if args.grpc:
        return demo_main()
    synth = Synth(seed=args.seed, customers=args.customers, months=args.months, now=datetime.now(UTC))
    records = synth.records()
    if args.bootstrap:
        took = asyncio.run(produce(records, args.bootstrap))
        print(f"produced {len(records)} events in {took:.2f}s")
    else:
        by_type: dict[str, int] = {}
        for r in records:
            by_type[r.event_type] = by_type.get(r.event_type, 0) + 1
        for name, n in sorted(by_type.items()):
            print(f"{n:8d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
