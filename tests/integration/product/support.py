"""Builders shared by the product integration tests."""

from __future__ import annotations

import uuid

from google.type import money_pb2

from bank.product.v1 import product_pb2

P = product_pb2.Product


def cny(yuan: int, fen: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="CNY", units=yuan, nanos=fen * 10_000_000)


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def product_request(
    type_: int = P.TYPE_DEPOSIT,
    risk: int = 1,
    *,
    min_yuan: int = 100,
    max_yuan: int = 1_000_000,
    term_months: int = 12,
    rate_bps: int = 200,
    min_age: int = 0,
    max_age: int = 0,
    request_id: str = "",
) -> product_pb2.CreateProductRequest:
    return product_pb2.CreateProductRequest(
        product=P(
            display_name="Test product",
            type=type_,  # type: ignore[arg-type]
            risk_level=risk,  # type: ignore[arg-type]
            terms=P.Terms(
                currency_code="CNY",
                min_amount=cny(min_yuan),
                max_amount=cny(max_yuan),
                term_months=term_months,
                annual_rate_bps=rate_bps,
            ),
            eligibility=P.Eligibility(min_age=min_age, max_age=max_age),
        ),
        request_id=request_id,
    )


def subscribe(
    customer_id: str, product_id: str, yuan: int, request_id: str = ""
) -> product_pb2.CreateSubscriptionRequest:
    return product_pb2.CreateSubscriptionRequest(
        customer_id=customer_id,
        subscription=product_pb2.Subscription(product_id=product_id, amount=cny(yuan)),
        request_id=request_id,
    )


def posting(
    customer_id: str, subscription_id: str, direction: int, yuan: int, request_id: str = ""
) -> product_pb2.PostTransactionRequest:
    return product_pb2.PostTransactionRequest(
        customer_id=customer_id,
        subscription_id=subscription_id,
        transaction=product_pb2.Transaction(direction=direction, amount=cny(yuan)),  # type: ignore[arg-type]
        request_id=request_id,
    )


CREDIT = product_pb2.Transaction.DIRECTION_CREDIT
DEBIT = product_pb2.Transaction.DIRECTION_DEBIT
