"""A latent-behaviour population: ground truth for back-testing churn and cross-sell scores.

:class:`Population` (a :class:`devtools.synth.Synth`: same catalogue, identities, event shapes,
deterministic ids) simulates customers month by month from *hidden* traits the hub never sees:

- **life stage** (from the age), **income** (a monthly salary or pension, credited around the
  10th; some customers have none), **savings habit**, **risk appetite** (the questionnaire turns
  it into a noisy C1..C5), **engagement** (card/transfer spending per month);
- **noise that is not churn**: a seasonal swing of spending (peak around the spring festival),
  long holidays (2-7 weeks of almost no spending, the salary still arrives), salary rises and
  cuts, spells without a salary (2-6 months of job change), big one-off withdrawals;
- **leaving**: a hidden satisfaction sets a monthly hazard of deciding to leave; a leaver either
  *fades* (over 1.5-8 months: spending dries up, the salary moves to another bank at some point,
  balances are transferred out in chunks, then every holding is closed — or, for some, the
  account is simply left asleep) or leaves *abruptly* (everything out and closed within days,
  no warning in the data);
- **product adoption from needs**, not from the hub's offer rules: each month a customer may
  open a product with a probability driven by life stage, balance, spending and risk appetite
  (only what the product service would accept: the eligibility policy is applied).

Every parameter is in :class:`Params` (documented in docs/data-hub.md, "Back-testing").
``Population(seed=N, customers=..., months=...).events()`` is deterministic for its arguments.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from bank.customer.v1 import events_pb2 as cev
from bank.product.v1 import events_pb2 as pev
from bank.product.v1 import product_pb2
from devtools.synth import PRODUCT_SOURCE, SURNAMES, Synth, SynthEvent, _Customer, _Sub, national_id, ts
from services.policy import eligibility as policy

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Params:
    """The simulator's knobs (monthly rates unless said otherwise)."""

    joined_during_share: float = 0.25  # customers who register inside the simulated window
    salaried_share: float = 0.8  # others live on transfers in (irregular credits)
    spend_per_month: float = 8.0  # median card/transfer debits per month (lognormal, sigma 0.5)
    season_amplitude_max: float = 0.5  # spending x (1 + a cos(month - peak))
    holiday_per_year: float = 0.5  # chance of one long holiday a year (14-49 days, spending x 0.1)
    salary_change_per_year: float = 0.2  # salary x lognormal(0, 0.35)
    no_salary_per_year: float = 0.06  # job change: no salary for 2-6 months, then it resumes
    big_withdrawal_per_year: float = 0.15  # a one-off 30-70 % withdrawal (a car, a flat) - not churn
    leave_hazard: float = 0.011  # base monthly hazard of deciding to leave (x exp(-0.7 satisfaction))
    new_customer_hazard_x: float = 1.8  # ... in the first year
    abrupt_share: float = 0.12  # leavers who go within days, with no warning
    fade_days: tuple[int, int] = (90, 270)  # a fading leaver's drift, uniform
    fade_sleep_share: float = 0.3  # fading leavers who leave the account asleep instead of closing
    adoption_scale: float = 1.0  # scales every product-opening hazard
    term_months: int = 12  # a term deposit matures (closes) after this

    def leave_hazard_of(self, satisfaction: float, tenure_days: float) -> float:
        """The monthly hazard of deciding to leave of a customer this satisfied, this long a customer."""
        hazard = self.leave_hazard * math.exp(-0.7 * satisfaction)
        return hazard * (self.new_customer_hazard_x if tenure_days < 365 else 1.0)


@dataclass
class _Latent:
    stage: str
    salary: int  # minor units per month (0 = none)
    savings: float  # share of income kept
    appetite: float  # 0..1
    engagement: float  # debits per month
    season: tuple[float, int]  # amplitude, peak month
    satisfaction: float
    leave_at: datetime | None = None
    abrupt: bool = False
    fade_days: int = 0
    sleeps: bool = False
    salary_stops: datetime | None = None
    pauses: list[tuple[datetime, datetime]] = field(default_factory=list)  # salary gaps
    holidays: list[tuple[datetime, datetime]] = field(default_factory=list)


def _stage(age: int) -> str:
    return "young" if age < 30 else "family" if age < 45 else "established" if age < 60 else "retired"


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class Population(Synth):
    """Reproducible latent-behaviour population; ``events()`` as :class:`Synth`'s."""

    def __init__(self, *, params: Params | None = None, **kw: object) -> None:
        kw.setdefault("months", 30)
        kw.setdefault("prefix", "p")
        super().__init__(**kw)  # type: ignore[arg-type]
        self.params = params or Params()
        self._by_id = {p.product_id: p for p in self.products}
        #: customer_id -> the hidden traits and decisions (for checks; the hub never sees them)
        self.latents: dict[str, _Latent] = {}

    # ---------------------------------------------------------------- event emitters
    def _emit_open(self, c: _Customer, product: product_pb2.Product, when: datetime, amount: int) -> SynthEvent:
        s = _Sub(self._id(), product, when, amount)
        c.subs.append(s)
        sub = self._sub_snapshot(c, s, amount, when)
        msg = pev.SubscriptionOpened(
            customer_id=c.customer_id,
            subscription_id=s.subscription_id,
            subscription=sub,
            version=1,
            occur_time=ts(when),
        )
        return SynthEvent(msg, PRODUCT_SOURCE, "subscription", s.subscription_id, 1, when, self._id())

    # ---------------------------------------------------------------- the population
    def events(self) -> list[SynthEvent]:
        self._rng = random.Random(f"{self.seed}:population")
        self._ids = random.Random(f"{self.seed}:{self.prefix}")
        out = self.catalogue_events()
        for i in range(self.n):
            out.extend(e for e in self._customer(i) if e.time <= self.now)
        out.sort(key=lambda e: (e.time, e.aggregate_id, e.version))
        return out

    def _customer(self, i: int) -> list[SynthEvent]:
        rng, p = self._rng, self.params
        start = self.now - timedelta(days=30 * self.months)
        birth = date(rng.randint(1952, 2004), rng.randint(1, 12), rng.randint(1, 28))
        if rng.random() < p.joined_during_share:
            created = start + timedelta(days=rng.uniform(0, 30 * self.months - 20))
        else:
            created = start - timedelta(days=rng.uniform(30, 1500))
        nid = national_id(rng, birth)
        c = _Customer(
            f"{self.prefix}-{self.seed}-{i:06d}",
            "latent",
            birth,
            rng.choice(SURNAMES) + "某",
            nid,
            f"1{rng.choice('3589')}{rng.randint(0, 999_999_999):09d}",
            f"p{i}@example.com",
            created,
        )
        lat = self._latent(c, start)
        self.latents[c.customer_id] = lat
        out = [self._customer_event(cev.CustomerCreated, c, created)]
        verified = created + timedelta(hours=rng.uniform(1, 48))
        c.status, c.kyc = 2, True
        out.append(self._customer_event(cev.CustomerVerified, c, verified))
        c.tolerance = max(1, min(5, round(1 + 4 * lat.appetite + rng.gauss(0, 0.6))))
        c.expire = self.now + timedelta(days=365 * 3)  # re-assessed yearly with the same answer
        out.append(
            self._customer_event(
                cev.CustomerRiskAssessed,
                c,
                verified + timedelta(hours=1),
                questionnaire_score=c.tolerance * 20 - 5,
                previous_risk_tolerance=0,
            )
        )
        opening = int(max(lat.salary, 300_000) * rng.uniform(0.5, 6))
        out.append(self._emit_open(c, self.products[0], verified + timedelta(hours=2), opening))
        out.extend(self._months(c, lat, max(start, verified + DAY)))
        return out

    def _latent(self, c: _Customer, start: datetime) -> _Latent:
        rng, p = self._rng, self.params
        age = self.now.year - c.birth.year
        stage = _stage(age)
        base = {"young": 8_000, "family": 14_000, "established": 16_000, "retired": 5_000}[stage]
        salary = int(rng.lognormvariate(math.log(base * 100), 0.5)) if rng.random() < p.salaried_share else 0
        lat = _Latent(
            stage=stage,
            salary=salary,
            savings=rng.betavariate(2, 5),
            appetite=rng.betavariate(2, 2) * (0.6 if stage == "retired" else 1.0),
            engagement=rng.lognormvariate(math.log(p.spend_per_month * (1.4 if stage == "young" else 1.0)), 0.5),
            season=(rng.uniform(0, p.season_amplitude_max), rng.choice((1, 2, 2, 10))),
            satisfaction=rng.gauss(0, 1),
        )
        # Hidden noise (dated up front: it does not depend on what the customer does).
        day = max(start, c.created)
        while day < self.now:
            year_end = day + timedelta(days=365)
            if rng.random() < p.holiday_per_year:
                h = day + timedelta(days=rng.uniform(0, 300))
                lat.holidays.append((h, h + timedelta(days=rng.uniform(14, 49))))
            if lat.salary and rng.random() < p.no_salary_per_year:
                g = day + timedelta(days=rng.uniform(0, 300))
                lat.pauses.append((g, g + timedelta(days=rng.uniform(60, 180))))
            day = year_end
        return lat

    def _months(self, c: _Customer, lat: _Latent, since: datetime) -> Iterator[SynthEvent]:
        rng, p = self._rng, self.params
        month = since
        while month < self.now and not c.subs[0].closed:
            nxt = min(month + timedelta(days=30), self.now)
            # (the draw only while undecided: the same random sequence as ever)
            if lat.leave_at is None and rng.random() < p.leave_hazard_of(lat.satisfaction, (month - c.created).days):
                self._decide_to_leave(lat, month + timedelta(days=rng.uniform(0, 30)))
            yield from self._month(c, lat, month, nxt)
            month = nxt

    def _decide_to_leave(self, lat: _Latent, when: datetime) -> None:
        rng, p = self._rng, self.params
        lat.leave_at = when
        lat.abrupt = rng.random() < p.abrupt_share
        lat.fade_days = 0 if lat.abrupt else rng.randint(*p.fade_days)
        lat.sleeps = not lat.abrupt and rng.random() < p.fade_sleep_share
        if lat.salary and not lat.abrupt:
            lat.salary_stops = when + timedelta(days=rng.uniform(0.05, 0.4) * lat.fade_days)

    def _fade(self, lat: _Latent, when: datetime) -> float:
        """1 before the decision, falling to 0 at the end of the fade (0 after an abrupt exit)."""
        if lat.leave_at is None or when < lat.leave_at:
            return 1.0
        if lat.abrupt:
            return 0.0
        done = (when - lat.leave_at).days / max(lat.fade_days, 1)
        return max(0.0, 1.0 - done)

    def _month(self, c: _Customer, lat: _Latent, start: datetime, end: datetime) -> Iterator[SynthEvent]:
        rng, p = self._rng, self.params
        cur = c.subs[0]
        mid = start + (end - start) / 2
        # The end of a relationship (abrupt, or the fade complete): money out, holdings closed.
        if lat.leave_at is not None and lat.leave_at < end:
            exit_at = lat.leave_at + timedelta(days=lat.fade_days)
            if exit_at < end:
                yield from self._exit(c, lat, max(exit_at, start) + timedelta(hours=rng.uniform(1, 200)))
                return
        fade = self._fade(lat, mid)
        # The month's money movements, planned with their times and then posted in time order
        # (a ledger's balances follow time: a debit's size depends on the balance at that moment).
        plan: list[tuple[datetime, int, Callable[[datetime], Iterator[SynthEvent]]]] = []

        def at(when: datetime, act: Callable[[datetime], Iterator[SynthEvent]]) -> None:
            plan.append((when, len(plan), act))

        def credit(value: int) -> Callable[[datetime], Iterator[SynthEvent]]:
            return lambda w: iter((self._txn_event(c, cur, w, value, True),))

        def debit(value: int, share: float = 0.0) -> Callable[[datetime], Iterator[SynthEvent]]:
            def act(w: datetime) -> Iterator[SynthEvent]:
                v = min(cur.balance, value or int(cur.balance * share))
                if v > 100:
                    yield self._txn_event(c, cur, w, v, False)

            return act

        # Salary (or pension), unless paused or moved away.
        if lat.salary:
            pay = start + timedelta(days=rng.uniform(8, 12))
            paused = any(a <= pay < b for a, b in lat.pauses)
            moved = lat.salary_stops is not None and pay >= lat.salary_stops
            if pay < end and not paused and not moved:
                if rng.random() < p.salary_change_per_year / 12:
                    lat.salary = int(lat.salary * rng.lognormvariate(0, 0.35))
                at(pay, credit(lat.salary))
        elif rng.random() < 0.6 * fade:
            at(start + timedelta(days=rng.uniform(0, 29)), credit(int(rng.lognormvariate(math.log(600_000), 0.8))))
        amp, peak = lat.season
        season = 1 + amp * math.cos(2 * math.pi * (mid.month - peak) / 12)
        budget = max(lat.salary, 400_000) * (1 - lat.savings)
        for _ in range(_poisson(rng, lat.engagement * season * fade)):
            when = start + timedelta(days=rng.uniform(0, (end - start).days or 1))
            if any(a <= when < b for a, b in lat.holidays) and rng.random() < 0.9:
                continue
            # (median x 0.78: the mean of a lognormal(sigma 0.7) debit is the budget share)
            at(when, debit(int(rng.lognormvariate(math.log(0.78 * budget / max(lat.engagement, 1)), 0.7))))
        if rng.random() < p.big_withdrawal_per_year / 12:
            at(start + timedelta(days=rng.uniform(0, 29)), debit(0, rng.uniform(0.3, 0.7)))
        if lat.leave_at is not None and lat.leave_at < end and not lat.abrupt and rng.random() < 0.7:
            at(mid, debit(0, rng.uniform(0.25, 0.6)))  # money walks out in chunks during a fade
        for s in c.subs[1:]:
            due = s.opened + timedelta(days=30 * p.term_months)
            if not s.closed and s.product.product_id == "dep-term-12m" and start <= due < end:
                at(due, functools.partial(self._mature, c, s))
        if fade > 0.5:
            at(mid + timedelta(hours=rng.uniform(0, 240)), lambda w: self._adopt(c, lat, w))
        for when, _, act in sorted(plan, key=lambda x: (x[0], x[1])):
            yield from act(when)

    def _mature(self, c: _Customer, s: _Sub, due: datetime) -> Iterator[SynthEvent]:
        """A term deposit matures: back to the current account, the holding closes."""
        value = s.balance
        yield self._txn_event(c, s, due, value, False)
        yield self._close_event(c, s, due + timedelta(minutes=1), s.balance)
        yield self._txn_event(c, c.subs[0], due + timedelta(minutes=2), value, True)

    def _exit(self, c: _Customer, lat: _Latent, when: datetime) -> Iterator[SynthEvent]:
        open_subs = [s for s in c.subs if not s.closed]
        if lat.sleeps:
            return  # the account is left asleep: no more activity, nothing closed
        for k, s in enumerate(reversed(open_subs)):
            at = when + timedelta(hours=k)
            if s.balance > 0:
                yield self._txn_event(c, s, at, s.balance, False)
            yield self._close_event(c, s, at + timedelta(minutes=5), s.balance)

    def _needs(self, c: _Customer, lat: _Latent, product: product_pb2.Product, balance: int) -> float:
        """Monthly probability of opening ``product`` from hidden needs (not the offer rules)."""
        pid, a = product.product_id, lat.appetite
        rich = balance / 100 / 50_000  # 1.0 = 50k CNY on the current account
        young, family = lat.stage == "young", lat.stage == "family"
        age = self.now.year - c.birth.year
        need = {
            "dep-term-12m": 0.01 * min(rich, 4) ** 1.5 * (1 - a),
            "card-classic": (0.035 if young else 0.012 if family else 0.002) * min(lat.engagement / 8, 3),
            "loan-personal": 0.15 if family and rich < 0.5 else 0.002,
            "wm-cash-r1": 0.02 * min(rich, 3) * (a < 0.35),
            "wm-bond-r2": 0.02 * min(rich, 3) * (0.25 < a < 0.55),
            "wm-mixed-r3": 0.02 * min(rich, 3) * (0.45 < a < 0.75),
            "wm-equity-r4": 0.05 * min(rich, 3) * (a > 0.65) * (age < 55),
            "wm-pe-r5": 0.15 * min(max(rich - 2, 0), 3) * (a > 0.7),
        }.get(pid, 0.0)
        return max(0.0, need) * self.params.adoption_scale

    def _adopt(self, c: _Customer, lat: _Latent, when: datetime) -> Iterator[SynthEvent]:
        rng = self._rng
        cur = c.subs[0]
        held = {s.product.product_id for s in c.subs if not s.closed}
        applicant = policy.Applicant(
            status=2,
            kyc_verified=True,
            age_low=when.year - c.birth.year - 1,
            age_high=when.year - c.birth.year,
            risk_tolerance=c.tolerance,
            risk_tolerance_expire_us=None,
        )
        for product in self.products[1:]:
            if product.product_id in held:
                continue
            offering = policy.Offering(
                type=product.type,
                state=product.state,
                risk_level=product.risk_level,
                min_age=product.eligibility.min_age,
                max_age=product.eligibility.max_age,
            )
            if policy.eligibility_reasons(offering, applicant, 0):
                continue
            if rng.random() >= self._needs(c, lat, product, cur.balance):
                continue
            at = when
            if product.type in (1, 3):  # funded from the current account
                amount = int(cur.balance * rng.uniform(0.2, 0.6))
                if amount < 10_000:
                    continue
                yield self._txn_event(c, cur, at, amount, False)
            else:
                amount = 0
            yield self._emit_open(c, product, at + timedelta(minutes=1), amount)
            return  # at most one new product a month


def default_now() -> datetime:
    return datetime(2025, 6, 30, 12, tzinfo=UTC)
