"""Rows ↔ contract messages, and page tokens. No rules here: only shapes."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

import orjson
from google.protobuf import timestamp_pb2
from google.type import money_pb2

from bank.product.v1 import product_pb2
from services.kit import Amount, MoneyError, etag_of, invalid, to_money
from services.product import domain
from services.product.store import ProductRecord, ProductRow, SubscriptionRow, TransactionRecord, TransactionRow, utc


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    value = utc(value)
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def amount_of(money: money_pb2.Money, field: str) -> Amount:
    """An exact Amount, or INVALID_ARGUMENT naming the field (unknown currency, sub-minor digits)."""
    try:
        return Amount.of(money)
    except MoneyError as exc:
        raise invalid(field, str(exc)) from None


def etag(resource_id: str, version: int) -> str:
    """The platform's one etag format (services.kit.etag_of)."""
    return etag_of(resource_id, version)


# ------------------------------------------------------------------------------------------
# products
# ------------------------------------------------------------------------------------------


def terms_of(product: product_pb2.Product) -> tuple[domain.Terms, domain.Rules]:
    t = product.terms
    low = amount_of(t.min_amount, "product.terms.min_amount") if t.HasField("min_amount") else None
    high = amount_of(t.max_amount, "product.terms.max_amount") if t.HasField("max_amount") else None
    terms = domain.Terms(t.currency_code, low, high, t.term_months, t.annual_rate_bps)
    return terms, domain.Rules(product.eligibility.min_age, product.eligibility.max_age)


def facts(row: ProductRow | ProductRecord) -> domain.ProductFacts:
    low = Amount(row.min_minor, row.currency) if row.min_minor is not None else None
    high = Amount(row.max_minor, row.currency) if row.max_minor is not None else None
    return domain.ProductFacts(
        product_id=row.product_id,
        type=row.type,
        risk_level=row.risk_level,
        state=row.state,
        terms=domain.Terms(row.currency, low, high, row.term_months, row.annual_rate_bps),
        rules=domain.Rules(row.min_age, row.max_age),
    )


def product_message(row: ProductRow | ProductRecord) -> product_pb2.Product:
    terms = product_pb2.Product.Terms(
        currency_code=row.currency, term_months=row.term_months, annual_rate_bps=row.annual_rate_bps
    )
    if row.min_minor is not None:
        terms.min_amount.CopyFrom(to_money(row.min_minor, row.currency))
    if row.max_minor is not None:
        terms.max_amount.CopyFrom(to_money(row.max_minor, row.currency))
    return product_pb2.Product(
        product_id=row.product_id,
        display_name=row.display_name,
        type=row.type,  # type: ignore[arg-type]
        risk_level=row.risk_level,  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        terms=terms,
        eligibility=product_pb2.Product.Eligibility(min_age=row.min_age, max_age=row.max_age),
        description=row.description,
        version=row.version,
        etag=etag(row.product_id, row.version),
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        publish_time=ts(row.publish_time),
        retire_time=ts(row.retire_time),
    )


# ------------------------------------------------------------------------------------------
# subscriptions and transactions
# ------------------------------------------------------------------------------------------


def subscription_message(row: SubscriptionRow) -> product_pb2.Subscription:
    return product_pb2.Subscription(
        subscription_id=row.subscription_id,
        customer_id=row.customer_id,
        product_id=row.product_id,
        product_type=row.product_type,  # type: ignore[arg-type]
        amount=to_money(row.amount_minor, row.currency),
        balance=to_money(row.balance_minor, row.currency),
        state=row.state,  # type: ignore[arg-type]
        create_time=ts(row.create_time),
        update_time=ts(row.update_time),
        close_time=ts(row.close_time),
        version=row.version,
        etag=etag(row.subscription_id, row.version),
    )


def transaction_message(row: TransactionRow | TransactionRecord) -> product_pb2.Transaction:
    return product_pb2.Transaction(
        transaction_id=row.transaction_id,
        subscription_id=row.subscription_id,
        customer_id=row.customer_id,
        direction=row.direction,  # type: ignore[arg-type]
        amount=to_money(row.amount_minor, row.currency),
        balance_after=to_money(row.balance_after_minor, row.currency),
        post_time=ts(row.post_time),
        description=row.description,
    )


# ------------------------------------------------------------------------------------------
# page tokens (AIP-158): opaque, bound to the query they were issued for
# ------------------------------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 50


def page_size(requested: int) -> int:
    return requested or DEFAULT_PAGE_SIZE


def _query_hash(query: object) -> str:
    return hashlib.sha256(orjson.dumps(query)).hexdigest()[:16]


def encode_token(cursor: str | int, query: object) -> str:
    raw = orjson.dumps({"c": cursor, "q": _query_hash(query)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: object) -> str | int | None:
    """The cursor of a page token (None for the first page); INVALID_ARGUMENT if foreign or garbled."""
    if not token:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = data["c"]
        ok = data["q"] == _query_hash(query) and isinstance(cursor, (str, int))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise invalid("page_token", "not a page token of this query")
    return cursor  # type: ignore[no-any-return]
