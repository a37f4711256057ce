"""Use cases of the product service: each write decides; the kit's command port does the rest.

Every write runs through :class:`services.kit.commands.Commands`: replay of a seen request_id
(AIP-155, the first response), ONE unit of work around the decision here (change the aggregate,
version bump first, stage its event with ``add_event``), the response remembered in it, the
commit and the relay's wake-up, and the retry when a concurrent duplicate wins a unique key.
I/O outside the transaction (the customer lookup) comes first, after a replay check, so it never
holds a database transaction open and a retry is answered without it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bank.product.v1 import events_pb2, product_pb2
from services.kit import (
    Aborted,
    AlreadyExists,
    Amount,
    Commands,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Reader,
    Tx,
    Unavailable,
    add_event,
    guard_staged,
    invalid,
    read_sessionmaker,
    source_of,
    stage_insert,
)
from services.product import convert, domain, replica, store
from services.product.domain import CustomerProfile
from services.product.replica import SOURCE_CUSTOMER_SERVICE, SOURCE_REPLICA, answered_by

SOURCE = source_of("product")
M = TypeVar("M", bound=Message)


class Freshness(Protocol):
    def caught_up(self) -> bool: ...


class CustomerLookup(Protocol):
    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> CustomerProfile: ...


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _refused(exc: domain.DomainError) -> FailedPrecondition:
    return FailedPrecondition(exc.message, reason=exc.reason)


#: What each refusal code concerns (PreconditionFailure.Violation.subject): the customer, the
#: product, or the request's amount field.
_PRODUCT_CODES = frozenset({domain.PRODUCT_NOT_ACTIVE})
_AMOUNT_CODES = frozenset({domain.CURRENCY_MISMATCH, domain.AMOUNT_BELOW_MIN, domain.AMOUNT_ABOVE_MAX})


def _not_eligible(reasons: list[domain.Reason], customer_id: str, product_id: str) -> FailedPrecondition:
    """The refusal of an unsuitable subscription: one PreconditionFailure violation per failed rule
    (type = its code), and the whole sentence in English and Chinese (a LocalizedMessage)."""
    codes = [r.code for r in reasons]

    def subject(code: str) -> str:
        if code in _PRODUCT_CODES:
            return f"products/{product_id}"
        return "subscription.amount" if code in _AMOUNT_CODES else f"customers/{customer_id}"

    english = "; ".join(r.message for r in reasons)
    chinese = "；".join(r.message_zh or r.message for r in reasons)
    return FailedPrecondition(
        f"the customer is not eligible: {english}",
        reason="NOT_ELIGIBLE",
        metadata={"reasons": ",".join(codes), "product_id": product_id},
        preconditions=[PreconditionViolation(r.code, subject(r.code), r.message) for r in reasons],
        localized={
            "en": f"The customer is not eligible: {english}.",
            "zh-CN": f"客户不符合该产品的购买条件：{chinese}。",
        },
    )


def _retrieved(task: asyncio.Future[Any]) -> None:
    """(a task no one awaits any more: its outcome is taken, so asyncio does not log it)"""
    if not task.cancelled():
        task.exception()


def _eligibility_result(
    request: product_pb2.CheckEligibilityRequest, reasons: list[domain.Reason]
) -> product_pb2.EligibilityResult:
    return product_pb2.EligibilityResult(
        eligible=not reasons,
        reasons=[product_pb2.EligibilityResult.Reason(code=r.code, message=r.message) for r in reasons],
        product_id=request.product_id,
        customer_id=request.customer_id,
    )


def _check_etag(given: str, resource_id: str, version: int) -> None:
    if given and given != convert.etag(resource_id, version):
        raise Aborted("the resource changed since it was read (etag mismatch)", reason="ETAG_MISMATCH")


class ProductUseCases:
    """The application layer behind the gRPC servicer."""

    def __init__(
        self,
        engine: AsyncEngine,
        customers: CustomerLookup,
        *,
        after_commit: list[Callable[[], None]] | None = None,
        replica: Freshness | None = None,
    ) -> None:
        self._reads = read_sessionmaker(engine)
        self._reader = Reader(engine)  # (single Core reads on the pool's driver connection, ADR 0029)
        self._customers = customers
        #: The customers' replicated eligibility facts' freshness (ADR 0054); None: always ask.
        self._replica = replica
        self._commands = Commands(engine, after_commit=after_commit)

    # -- catalogue -------------------------------------------------------------------------------

    async def create_product(self, request: product_pb2.CreateProductRequest) -> product_pb2.Product:
        given = request.product
        terms, rules = convert.terms_of(given)
        try:
            domain.validate_terms(given.type, terms, rules)
        except domain.InvalidTerms as exc:
            raise InvalidArgument(
                f"invalid terms: {exc.message}",
                reason="INVALID_TERMS",
                violations=[FieldViolation(f, d) for f, d in exc.violations],
            ) from None
        product_id = given.product_id or _new_id("P")

        async def decide(session: AsyncSession) -> product_pb2.Product:
            if await store.get_product(session, product_id) is not None:
                raise AlreadyExists(f"product {product_id} exists", reason="PRODUCT_EXISTS")
            at = store.now()
            row = store.ProductRow(
                product_id=product_id,
                display_name=given.display_name,
                description=given.description,
                type=given.type,
                risk_level=given.risk_level,
                state=domain.DRAFT,
                currency=terms.currency,
                min_minor=terms.min.minor if terms.min else None,
                max_minor=terms.max.minor if terms.max else None,
                term_months=terms.term_months,
                annual_rate_bps=terms.annual_rate_bps,
                min_age=rules.min_age,
                max_age=rules.max_age,
                version=1,
                create_time=at,
                update_time=at,
            )
            session.add(row)
            return convert.product_message(row)

        return await self._commands.run("CreateProduct", request, product_pb2.Product, decide)

    async def publish_product(self, request: product_pb2.PublishProductRequest) -> product_pb2.Product:
        return await self._transition(request, "PublishProduct", domain.publish, events_pb2.ProductPublished)

    async def retire_product(self, request: product_pb2.RetireProductRequest) -> product_pb2.Product:
        return await self._transition(request, "RetireProduct", domain.retire, events_pb2.ProductRetired)

    async def _transition(
        self,
        request: product_pb2.PublishProductRequest | product_pb2.RetireProductRequest,
        method: str,
        rule: Callable[[int], int],
        event: type[events_pb2.ProductPublished] | type[events_pb2.ProductRetired],
    ) -> product_pb2.Product:

        async def decide(session: AsyncSession) -> product_pb2.Product:
            row = await session.get(store.ProductRow, request.product_id, with_for_update=True)
            if row is None:
                raise NotFound(f"product {request.product_id} not found", reason="PRODUCT_NOT_FOUND")
            _check_etag(request.etag, row.product_id, row.version)
            try:
                row.state = rule(row.state)
            except domain.DomainError as exc:
                raise _refused(exc) from None
            at = store.now()
            row.version += 1
            row.update_time = at
            if row.state == domain.ACTIVE:
                row.publish_time = at
            else:
                row.retire_time = at
            await session.flush()  # the version bump precedes the outbox row
            snapshot = convert.product_message(row)
            add_event(
                session,
                event(product_id=row.product_id, product=snapshot, version=row.version, occur_time=convert.ts(at)),
                source=SOURCE,
                aggregate_type="product",
                aggregate_id=row.product_id,
                version=row.version,
            )
            return snapshot

        return await self._commands.run(method, request, product_pb2.Product, decide)

    async def get_product(self, product_id: str) -> product_pb2.Product:
        row = await store.read_product(self._reader, product_id)
        if row is None:
            raise NotFound(f"product {product_id} not found", reason="PRODUCT_NOT_FOUND")
        return convert.product_message(row)

    async def list_products(self, request: product_pb2.ListProductsRequest) -> product_pb2.ListProductsResponse:
        query = {"m": "ListProducts", "t": request.type, "s": request.state}
        after = convert.decode_token(request.page_token, query)
        size = convert.page_size(request.page_size)
        async with self._reads() as session:
            rows = await store.list_products(
                session, after=str(after or ""), limit=size + 1, type_=request.type, state=request.state
            )
        response = product_pb2.ListProductsResponse(products=[convert.product_message(r) for r in rows[:size]])
        if len(rows) > size:
            response.next_page_token = convert.encode_token(rows[size - 1].product_id, query)
        return response

    # -- eligibility -----------------------------------------------------------------------------

    async def check_eligibility(
        self, request: product_pb2.CheckEligibilityRequest, *, time_remaining: float | None = None
    ) -> product_pb2.EligibilityResult:
        amount = convert.amount_of(request.amount, "amount") if request.HasField("amount") else None
        if self._replica is None or not self._replica.caught_up():
            looked_up = await self._eligibility_by_lookup(request, amount, time_remaining)
            answered_by(SOURCE_CUSTOMER_SERVICE, "replica_off" if self._replica is None else "replica_behind")
            return _eligibility_result(request, looked_up)
        # The replica is caught up (ADR 0054): the product and the customer's replicated facts in
        # one statement; the customer service is asked only when the replica cannot decide.
        row, known = await replica.read_product_and_customer(self._reader, request.product_id, request.customer_id)
        if row is None:
            raise NotFound(f"product {request.product_id} not found", reason="PRODUCT_NOT_FOUND")
        product, now = convert.facts(row), store.now()
        reasons = None if known is None else domain.evaluate_if_certain(product, known, amount, now)
        if reasons is not None and domain.CUSTOMER_FACT_CODES.isdisjoint(r.code for r in reasons):
            answered_by(SOURCE_REPLICA)
            return _eligibility_result(request, reasons)
        # A refusal on the customer's own facts is the customer service's to give (ADR 0061): the
        # customer may have just fixed them (approved KYC, a new risk assessment) and the replica
        # may be a moment behind. Should the customer service not answer, the replica's refusal is
        # the best answer there is.
        why = "not_replicated" if known is None else ("age_uncertain" if reasons is None else "refusal_confirmed")
        try:
            profile = await self._customers.profile(request.customer_id, time_remaining=time_remaining)
        except Unavailable:
            if reasons is None:
                raise
            answered_by(SOURCE_REPLICA, "refusal_unconfirmed")
            return _eligibility_result(request, reasons)
        answered_by(SOURCE_CUSTOMER_SERVICE, why)
        return _eligibility_result(request, domain.evaluate_eligibility(product, profile, amount, store.now()))

    async def _eligibility_by_lookup(
        self, request: product_pb2.CheckEligibilityRequest, amount: Amount | None, time_remaining: float | None
    ) -> list[domain.Reason]:
        # The customer lookup runs while the product is read (a read: nothing to undo); an
        # unknown product still answers PRODUCT_NOT_FOUND first, the lookup then cancelled.
        lookup = asyncio.ensure_future(self._customers.profile(request.customer_id, time_remaining=time_remaining))
        try:
            product = await self._product_facts(request.product_id)
        except BaseException:
            lookup.cancel()
            lookup.add_done_callback(_retrieved)
            raise
        profile = await lookup
        return domain.evaluate_eligibility(product, profile, amount, store.now())

    async def _product_facts(self, product_id: str) -> domain.ProductFacts:
        row = await store.read_product(self._reader, product_id)
        if row is None:
            raise NotFound(f"product {product_id} not found", reason="PRODUCT_NOT_FOUND")
        return convert.facts(row)

    # -- subscriptions ---------------------------------------------------------------------------

    async def create_subscription(
        self, request: product_pb2.CreateSubscriptionRequest, *, time_remaining: float | None = None
    ) -> product_pb2.Subscription:
        product_id = request.subscription.product_id
        # (the replay read and the product's row in one statement, ADR 0042)
        done, row = await self._commands.replayed_or_read(
            "CreateSubscription", request, product_pb2.Subscription, store.PRODUCT_BY_ID, {"product_id": product_id}
        )
        if done is not None:
            return done  # (answered without asking the customer service again)
        amount = convert.amount_of(request.subscription.amount, "subscription.amount")
        if row is None:
            raise NotFound(f"product {product_id} not found", reason="PRODUCT_NOT_FOUND")
        product = convert.facts(store.ProductRecord(*row))
        profile = await self._customers.profile(request.customer_id, time_remaining=time_remaining)
        reasons = domain.evaluate_eligibility(product, profile, amount, store.now())
        if reasons:
            raise _not_eligible(reasons, request.customer_id, product.product_id)

        def retired() -> FailedPrecondition:
            reason = domain.fixed_reason(domain.PRODUCT_NOT_ACTIVE)
            return _not_eligible([reason], request.customer_id, product.product_id)

        async def decide(tx: Tx) -> product_pb2.Subscription:
            # (retired meanwhile: nothing is written; on PostgreSQL checked in the INSERT itself)
            await guard_staged(tx, store.PRODUCT_IS_ACTIVE, {"g_product_id": product.product_id}, retired)
            at = store.now()
            row = store.SubscriptionRow(
                subscription_id=_new_id("S"),
                customer_id=request.customer_id,
                product_id=product.product_id,
                product_type=product.type,
                currency=amount.currency,
                amount_minor=amount.minor,
                balance_minor=amount.minor,
                no_overdraft=not domain.may_go_negative(product.type),
                state=domain.OPEN,
                version=1,
                create_time=at,
                update_time=at,
            )
            # (a new aggregate: its row, outbox row and idempotency record go in one INSERT at commit)
            stage_insert(tx, store.SUBSCRIPTIONS, store.subscription_values(row))
            snapshot = convert.subscription_message(row)
            _add_subscription_event(tx, events_pb2.SubscriptionOpened, row, snapshot, at)
            return snapshot

        return await self._commands.run_core(
            "CreateSubscription", request, product_pb2.Subscription, decide, replay_checked=True
        )

    async def close_subscription(self, request: product_pb2.CloseSubscriptionRequest) -> product_pb2.Subscription:

        async def decide(session: AsyncSession) -> product_pb2.Subscription:
            row = await self._owned_subscription(session, request.customer_id, request.subscription_id, lock=True)
            _check_etag(request.etag, row.subscription_id, row.version)
            try:
                row.state = domain.close(row.state)
            except domain.DomainError as exc:
                raise _refused(exc) from None
            at = store.now()
            row.version += 1
            row.update_time = row.close_time = at
            await session.flush()
            snapshot = convert.subscription_message(row)
            _add_subscription_event(session, events_pb2.SubscriptionClosed, row, snapshot, at)
            return snapshot

        return await self._commands.run("CloseSubscription", request, product_pb2.Subscription, decide)

    async def list_subscriptions(
        self, request: product_pb2.ListSubscriptionsRequest
    ) -> product_pb2.ListSubscriptionsResponse:
        query = {"m": "ListSubscriptions", "c": request.customer_id}
        after = convert.decode_token(request.page_token, query)
        size = convert.page_size(request.page_size)
        async with self._reads() as session:
            rows = await store.list_subscriptions(session, request.customer_id, after=int(after or 0), limit=size + 1)
        response = product_pb2.ListSubscriptionsResponse(
            subscriptions=[convert.subscription_message(r) for r in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = convert.encode_token(rows[size - 1].seq, query)
        return response

    async def _owned_subscription(
        self, session: AsyncSession, customer_id: str, subscription_id: str, *, lock: bool = False
    ) -> store.SubscriptionRow:
        row = await store.get_subscription(session, subscription_id)
        if lock and row is not None:
            await session.refresh(row, with_for_update=True)
        if row is None or row.customer_id != customer_id:  # another customer's holding does not exist for you
            raise _no_subscription(subscription_id)
        return row

    # -- postings --------------------------------------------------------------------------------

    async def post_transaction(self, request: product_pb2.PostTransactionRequest) -> product_pb2.Transaction:
        txn = request.transaction
        amount = convert.amount_of(txn.amount, "transaction.amount")

        if not amount.is_positive:
            raise invalid("transaction.amount", "must be positive")
        delta = domain.signed(txn.direction, amount).minor

        # The hot path (ADR 0031): the replay check, ONE conditional UPDATE ... RETURNING that
        # applies the posting rules (owner, open, currency, no overdraft) and moves the balance,
        # then the ledger row, the outbox row and the idempotency record in one INSERT at commit.
        # Only a refused posting reads the subscription, to say why (domain.post).
        async def decide(tx: Tx) -> product_pb2.Transaction:
            at = store.now()
            posted = await store.apply_posting(
                tx, request.subscription_id, request.customer_id, amount.currency, delta, at
            )
            if posted is None:
                raise await _refusal(tx, request, amount)
            values = store.transaction_values(_new_id("T"), posted, txn.direction, amount.minor, txn.description, at)
            stage_insert(tx, store.TRANSACTIONS, values)
            response = convert.transaction_message(store.TransactionRow(**values))
            add_event(
                tx,
                events_pb2.TransactionPosted(
                    customer_id=posted.customer_id,
                    subscription_id=posted.subscription_id,
                    product_id=posted.product_id,
                    product_type=posted.product_type,  # type: ignore[arg-type]
                    transaction=response,
                    version=posted.version,
                    occur_time=convert.ts(at),
                ),
                source=SOURCE,
                aggregate_type="subscription",
                aggregate_id=posted.subscription_id,
                version=posted.version,
                subject=posted.customer_id,
            )
            return response

        return await self._commands.run_core(
            "PostTransaction", request, product_pb2.Transaction, decide, fold_replay=True
        )

    async def list_transactions(
        self, request: product_pb2.ListTransactionsRequest
    ) -> product_pb2.ListTransactionsResponse:
        query = {"m": "ListTransactions", "c": request.customer_id, "s": request.subscription_id}
        before = convert.decode_token(request.page_token, query)
        size = convert.page_size(request.page_size)
        if await store.read_owner(self._reader, request.subscription_id) != request.customer_id:
            raise _no_subscription(request.subscription_id)  # (another customer's holding does not exist for you)
        rows = await store.read_transactions(
            self._reader, request.subscription_id, before=int(before) if before is not None else None, limit=size + 1
        )
        response = product_pb2.ListTransactionsResponse(
            transactions=[convert.transaction_message(r) for r in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = convert.encode_token(rows[size - 1].seq, query)
        return response


def _no_subscription(subscription_id: str) -> NotFound:
    return NotFound(f"subscription {subscription_id} not found", reason="SUBSCRIPTION_NOT_FOUND")


async def _refusal(
    tx: Tx, request: product_pb2.PostTransactionRequest, amount: domain.Amount
) -> InvalidArgument | FailedPrecondition | NotFound:
    """Why the conditional UPDATE refused a posting: the rules of ``domain.post`` on the row as
    it is now (NotFound for a missing or another customer's subscription)."""
    sub = await store.posting_state(tx, request.subscription_id)
    if sub is None or sub.customer_id != request.customer_id:  # another customer's holding does not exist for you
        return _no_subscription(request.subscription_id)
    try:
        domain.post(
            domain.Amount(sub.balance_minor, sub.currency),
            request.transaction.direction,
            amount,
            sub.product_type,
            sub.state,
        )
    except domain.CurrencyMismatch as exc:
        return invalid("transaction.amount.currency_code", exc.message)
    except domain.DomainError as exc:
        return _refused(exc)
    # (passes on the row as read now: a concurrent posting changed it in between)
    return FailedPrecondition("the debit exceeds the available balance", reason=domain.InsufficientFunds.reason)


def _add_subscription_event(
    session: AsyncSession | Tx,
    event_type: type[events_pb2.SubscriptionOpened] | type[events_pb2.SubscriptionClosed],
    row: store.SubscriptionRow,
    snapshot: product_pb2.Subscription,
    at: datetime,
) -> None:
    """Stage a subscription lifecycle event (opened/closed) in the use case's transaction."""
    add_event(
        session,
        event_type(
            customer_id=row.customer_id,
            subscription_id=row.subscription_id,
            subscription=snapshot,
            version=row.version,
            occur_time=convert.ts(at),
        ),
        source=SOURCE,
        aggregate_type="subscription",
        aggregate_id=row.subscription_id,
        version=row.version,
        subject=row.customer_id,
    )
