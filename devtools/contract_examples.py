"""Recorded example events, produced by the producers' own code (message-pact style).

``python -m devtools.contract_examples [--out DIR]`` runs a scripted journey through the real
use cases of the customer and product services, each on a throwaway SQLite database with its
real migrations, and records what their transactional outbox holds: topic, key, CloudEvents
headers and the protobuf payload, exactly as the relay would publish them. The files land in
``contracts/examples/events/`` (one per event, in outbox order) and are committed.

Consumers replay them through their projection (``tests/contract/test_consumers.py`` folds them
with the data hub's pure ``services.data_hub.fold``), and the same tests re-run this recorder to
prove the committed recordings still match what the producers write today.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.type import money_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bank.customer.v1 import customer_pb2
from bank.product.v1 import product_pb2
from services.kit.db import create_engine
from services.kit.events import ReceivedEvent, parse_record
from services.kit.migrations import upgrade
from services.kit.outbox import OutboxRow

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "contracts" / "examples" / "events"
P = product_pb2.Product


def _cny(yuan: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="CNY", units=yuan)


async def _outbox(engine: AsyncEngine) -> list[OutboxRow]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(OutboxRow).order_by(OutboxRow.id))).all()
    return [OutboxRow(**row._mapping) for row in rows]


def _national_id(first17: str, check: Any) -> str:
    return first17 + check(first17)


async def _customer_journey(url: str) -> tuple[list[OutboxRow], str]:
    from services.customer.config import CustomerSettings, build_crypto
    from services.customer.domain import PersonalData, id_check_char
    from services.customer.main import MIGRATIONS
    from services.customer.service import CustomerService
    from services.customer.store import PiiCodec

    engine = create_engine(url)
    try:
        await upgrade(engine, MIGRATIONS)
        settings = CustomerSettings()  # type: ignore[call-arg]  # (every value has a default: the dev keys)
        service = CustomerService(engine, PiiCodec(*build_crypto(settings)))
        C = customer_pb2  # (requests without a request_id: nothing to replay)
        kept = await service.create(
            PersonalData(
                "张三",
                date(1990, 3, 7),
                _national_id("11010519900307001", id_check_char),
                "13812345678",
                "zhang@example.com",
            ),
            request=C.CreateCustomerRequest(),
        )
        cid = kept.customer_id
        await service.update(cid, {"mobile": "13912345678"}, etag="", request=C.UpdateCustomerRequest())
        await service.verify(cid, approve=True, reason="", etag="", request=C.VerifyCustomerRequest())
        await service.assess_risk(cid, 55, etag="", request=C.AssessRiskRequest())
        refused = await service.create(
            PersonalData("李四", date(1985, 11, 20), _national_id("11010519851120002", id_check_char), "13712345678"),
            request=C.CreateCustomerRequest(),
        )
        await service.verify(
            refused.customer_id,
            approve=False,
            reason="documents unreadable",
            etag="",
            request=C.VerifyCustomerRequest(),
        )
        closing = await service.create(
            PersonalData("王五", date(1978, 1, 2), _national_id("11010519780102001", id_check_char), "13612345678"),
            request=C.CreateCustomerRequest(),
        )
        await service.verify(closing.customer_id, approve=True, reason="", etag="", request=C.VerifyCustomerRequest())
        await service.close(closing.customer_id, reason="moved abroad", etag="", request=C.CloseCustomerRequest())
        return await _outbox(engine), cid
    finally:
        await engine.dispose()


class _Directory:
    """The product service's customer lookup, answering for the recorded customer only."""

    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id

    async def profile(self, customer_id: str, *, time_remaining: float | None = None) -> Any:
        from services.product.domain import CustomerProfile

        return CustomerProfile(
            customer_id=customer_id,
            status=customer_pb2.Customer.STATUS_ACTIVE,
            kyc_verified=True,
            age_years=36,
            risk_tolerance=3,
            risk_tolerance_expire_time=datetime.now(UTC) + timedelta(days=365),
        )


async def _product_journey(url: str, customer_id: str) -> list[OutboxRow]:
    from services.product.main import MIGRATIONS
    from services.product.usecases import ProductUseCases

    engine = create_engine(url)
    try:
        await upgrade(engine, MIGRATIONS)
        uc = ProductUseCases(engine, _Directory(customer_id))
        terms = P.Terms(currency_code="CNY", min_amount=_cny(1000), max_amount=_cny(1_000_000), term_months=12,
                        annual_rate_bps=350)  # fmt: skip
        product = await uc.create_product(
            product_pb2.CreateProductRequest(
                product=P(
                    display_name="稳健理财 12M",
                    type=P.TYPE_WEALTH,
                    risk_level=product_pb2.RISK_LEVEL_R2,
                    terms=terms,
                    eligibility=P.Eligibility(min_age=18, max_age=70),
                    description="recorded example",
                )
            )
        )
        pid = product.product_id
        await uc.publish_product(product_pb2.PublishProductRequest(product_id=pid))
        sub = await uc.create_subscription(
            product_pb2.CreateSubscriptionRequest(
                customer_id=customer_id, subscription=product_pb2.Subscription(product_id=pid, amount=_cny(5000))
            )
        )
        for direction, yuan in ((product_pb2.Transaction.DIRECTION_CREDIT, 2000),
                                (product_pb2.Transaction.DIRECTION_DEBIT, 1500)):  # fmt: skip
            await uc.post_transaction(
                product_pb2.PostTransactionRequest(
                    customer_id=customer_id,
                    subscription_id=sub.subscription_id,
                    transaction=product_pb2.Transaction(direction=direction, amount=_cny(yuan)),
                )
            )
        await uc.close_subscription(
            product_pb2.CloseSubscriptionRequest(customer_id=customer_id, subscription_id=sub.subscription_id)
        )
        await uc.retire_product(product_pb2.RetireProductRequest(product_id=pid))
        return await _outbox(engine)
    finally:
        await engine.dispose()


def _example(row: OutboxRow) -> dict[str, Any]:
    headers = json.loads(row.headers) if row.headers else []
    event = parse_record([(k, v.encode()) for k, v in _header_pairs(headers)], row.payload, key=row.key)
    return {
        "topic": row.topic,
        "key": row.key.decode(),
        "headers": dict(_header_pairs(headers)),
        "payload_base64": base64.b64encode(row.payload).decode(),
        "payload_json": json_format.MessageToDict(event.message, preserving_proto_field_name=True),
    }


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    """The outbox stores headers as a JSON list of pairs (or an object); text values either way."""
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v if isinstance(v, str) else bytes(v).decode()) for k, v in pairs]


async def record_async() -> list[dict[str, Any]]:
    """Run both journeys; every outbox row as an example dict (customer's first, then product's)."""
    with tempfile.TemporaryDirectory(prefix="zt-examples-") as tmp:
        customer_rows, cid = await _customer_journey(f"sqlite+aiosqlite:///{tmp}/customer.sqlite")
        product_rows = await _product_journey(f"sqlite+aiosqlite:///{tmp}/product.sqlite", cid)
    return [_example(row) for row in [*customer_rows, *product_rows]]


def record() -> list[dict[str, Any]]:
    return asyncio.run(record_async())


def load(directory: Path = EXAMPLES_DIR) -> list[dict[str, Any]]:
    """The committed examples, in recording order."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))]


def to_event(example: dict[str, Any], offset: int = 0) -> ReceivedEvent:
    """A committed example as the consumer's Kafka loop decodes it (the kit's ``parse_record``)."""
    headers = [(k, v.encode()) for k, v in example["headers"].items()]
    payload = base64.b64decode(example["payload_base64"])
    return parse_record(headers, payload, key=example["key"].encode(), topic=example["topic"], offset=offset)


def write(examples: Sequence[dict[str, Any]], directory: Path = EXAMPLES_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.json"):
        old.unlink()
    written = []
    for n, example in enumerate(examples, start=1):
        name = example["headers"]["ce_type"].rsplit(".", 1)[-1]
        path = directory / f"{n:02d}-{name}.json"
        path.write_text(json.dumps(example, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.contract_examples", description=__doc__)
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR, help="directory for the example files")
    args = parser.parse_args(argv)
    paths = write(record(), args.out)
    print(f"recorded {len(paths)} example events into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
