"""The data hub's fold without a database: events + stored rows -> row changes (services/data_hub/fold.py)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.type import money_pb2

from bank.customer.v1 import events_pb2 as cev
from bank.product.v1 import events_pb2 as pev
from bank.product.v1 import product_pb2
from devtools.synth import Synth
from services.data_hub import domain
from services.data_hub.codecs import ts_us, us_ts
from services.data_hub.fold import (
    TRANSACTION_COLUMNS,
    BadEvent,
    Changes,
    Current,
    CustomerRow,
    HoldingRow,
    Patches,
    Row,
    changes,
    fold,
)
from services.kit import as_dicts
from services.kit.events import ReceivedEvent
from tests.unit.data_hub.support import interleave, received

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
US = ts_us(us_ts(int(T0.timestamp() * 1_000_000)))  # type: ignore[arg-type]
DAY = 86_400 * 1_000_000


def event(msg: Message, *, at: datetime = T0, version: int = 1) -> ReceivedEvent:
    return ReceivedEvent(
        id=str(uuid.uuid4()), type=msg.DESCRIPTOR.full_name, source="/t", subject="", time=at,
        aggregate_type="x", aggregate_id="x", version=version, message=msg,
    )  # fmt: skip


def customer(cls: Any, cid: str, version: int, *, at: datetime = T0, status: int = 1) -> ReceivedEvent:
    snap = cev.CustomerSnapshot(customer_id=cid, version=version, status=status, full_name_masked=f"N{version}*")  # type: ignore[arg-type]
    return event(cls(customer_id=cid, customer=snap, version=version, occur_time=us_ts(_us(at))), at=at)


def money(micros: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="CNY", units=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def posted(cid: str, sid: str, version: int, *, at: datetime = T0, direction: int = 1, **txn: Any) -> ReceivedEvent:
    t = product_pb2.Transaction(
        transaction_id=txn.pop("transaction_id", str(uuid.uuid4())), subscription_id=sid, customer_id=cid,
        direction=direction, amount=money(5_000_000), balance_after=money(version * 1_000_000),  # type: ignore[arg-type]
        post_time=us_ts(_us(at)), **txn,
    )  # fmt: skip
    return event(pev.TransactionPosted(customer_id=cid, subscription_id=sid, transaction=t, version=version), at=at)


def _us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


# --------------------------------------------------------------------------------------------
# Step 1: events -> patches
# --------------------------------------------------------------------------------------------


def test_the_newest_snapshot_in_a_batch_wins_whatever_its_place() -> None:
    later = T0 + timedelta(hours=1)
    patches = fold(
        [customer(cev.CustomerVerified, "c1", 2, at=later), customer(cev.CustomerCreated, "c1", 1, status=0)]
    )
    patch = patches.customers["c1"]
    assert patch.version == 2
    assert patch.snapshot is not None and patch.snapshot["full_name_masked"] == "N2*"
    assert patch.last_event_us == _us(later)  # the latest event time, not the last one folded


def test_a_transaction_keeps_the_latest_posting_time_and_the_newest_balance() -> None:
    early, late = T0, T0 + timedelta(days=2)
    patches = fold([posted("c1", "s1", 3, at=late), posted("c1", "s1", 2, at=early)])
    assert patches.customers["c1"].last_txn_us == _us(late)
    assert patches.holdings["s1"].version == 3
    assert patches.holdings["s1"].fields["balance_micros"] == 3_000_000
    assert len(patches.transactions) == 2


def test_a_redelivered_transaction_is_folded_once() -> None:
    same = posted("c1", "s1", 2, transaction_id="t-1")
    assert list(fold([same, same]).transactions) == ["t-1"]


def test_events_the_hub_does_not_project_change_nothing() -> None:
    patches = fold([event(Empty())])
    assert not patches
    assert changes(patches, Current()) == Changes()


@pytest.mark.parametrize(
    "bad",
    [
        customer(cev.CustomerCreated, "", 1),
        posted("c1", "s1", 2, transaction_id=""),
        posted("c1", "s1", 2, direction=0),
        posted("c1", "", 2),
    ],
    ids=["no customer id", "no transaction id", "no direction", "no subscription id"],
)
def test_an_event_that_can_never_be_applied_is_a_bad_event(bad: ReceivedEvent) -> None:
    with pytest.raises(BadEvent):
        fold([bad])


# --------------------------------------------------------------------------------------------
# Step 2: patches + stored rows -> changes
# --------------------------------------------------------------------------------------------


def test_a_transaction_before_its_customer_inserts_a_dirty_stub_with_its_times() -> None:
    out = changes(fold([posted("c1", "s1", 2)]), Current())
    (stub,) = out.customer_inserts
    assert stub == {
        "customer_id": "c1", "last_event_us": US, "as_of_us": US, "last_txn_us": US, "dirty": True, "change_seq": 1,
    }  # fmt: skip
    assert "registered" not in stub  # the column default (not registered) until its snapshot arrives
    (holding,) = out.holding_inserts
    assert (holding["subscription_id"], holding["customer_id"], holding["version"]) == ("s1", "c1", 2)


def test_a_snapshot_not_newer_than_the_stored_row_only_moves_its_times_forward() -> None:
    stored = CustomerRow(customer_version=5, last_event_us=US + DAY, last_txn_us=None, as_of_us=US + DAY)
    out = changes(fold([customer(cev.CustomerUpdated, "c1", 4)]), Current(customers={"c1": stored}))
    assert out.customer_snapshot_updates == []
    assert out.customer_time_updates == [
        {"customer_id": "c1", "last_event_us": US + DAY, "as_of_us": US + DAY, "last_txn_us": None}
    ]


def test_a_newer_snapshot_updates_the_stored_customer() -> None:
    stored = CustomerRow(customer_version=1, last_event_us=US - DAY, last_txn_us=US - DAY, as_of_us=US - DAY)
    out = changes(fold([customer(cev.CustomerVerified, "c1", 2)]), Current(customers={"c1": stored}))
    (update,) = out.customer_snapshot_updates
    assert (update["customer_version"], update["full_name_masked"], update["registered"]) == (2, "N2*", True)
    assert (update["last_event_us"], update["last_txn_us"]) == (US, US - DAY)


def test_a_transaction_only_update_keeps_the_holdings_stored_state() -> None:
    stored = HoldingRow(
        version=4, open_us=US - DAY, product_id="p1", product_type=1, currency="CNY",
        balance_micros=9, state=domain.HOLDING_CLOSED, close_us=US - 1,
    )  # fmt: skip
    out = changes(fold([posted("c1", "s1", 5)]), Current(holdings={"s1": stored}))
    (update,) = out.holding_updates
    assert update["balance_micros"] == 5_000_000 and update["version"] == 5
    assert (update["state"], update["close_us"], update["open_us"]) == (domain.HOLDING_CLOSED, US - 1, US - DAY)


def test_an_earlier_opening_time_alone_moves_only_open_us_back() -> None:
    sub = product_pb2.Subscription(
        subscription_id="s1", customer_id="c1", version=1, amount=money(1), create_time=us_ts(US - DAY)
    )  # type: ignore[arg-type]
    opened = event(pev.SubscriptionOpened(customer_id="c1", subscription_id="s1", subscription=sub, version=1))
    stored = HoldingRow(3, US, "p1", 1, "CNY", 1, domain.HOLDING_OPEN, None)
    out = changes(fold([opened]), Current(holdings={"s1": stored}))
    assert out.holding_updates == []
    assert out.holding_open_updates == [{"subscription_id": "s1", "open_us": US - DAY}]


def test_a_product_not_newer_than_the_stored_one_leaves_the_catalogue_unchanged() -> None:
    published = event(pev.ProductPublished(product_id="p1", version=2, product=product_pb2.Product(product_id="p1")))
    assert not changes(fold([published]), Current(product_versions={"p1": 2})).catalogue_changed
    newer = changes(fold([published]), Current(product_versions={"p1": 1}))
    assert newer.catalogue_changed and [p["product_id"] for p in newer.product_updates] == ["p1"]
    assert changes(fold([published]), Current()).product_inserts[0]["state"] == domain.PRODUCT_ACTIVE


# --------------------------------------------------------------------------------------------
# The whole fold: any batching and any redelivery converge on the same rows
# --------------------------------------------------------------------------------------------


class Tables:
    """The writes of :class:`Changes` on plain dicts, as services/data_hub/facts.py does in SQL."""

    def __init__(self) -> None:
        self.customers: dict[str, Row] = {}  # rows by key, each table
        self.holdings: dict[str, Row] = {}
        self.transactions: dict[str, Row] = {}
        self.products: dict[str, Row] = {}

    def current(self, patches: Patches) -> Current:
        customers = {
            k: CustomerRow(r.get("customer_version", 0), r["last_event_us"], r["last_txn_us"], r["as_of_us"])
            for k, r in self.customers.items()
            if k in patches.customers
        }
        holdings = {k: HoldingRow(**self._holding(r)) for k, r in self.holdings.items() if k in patches.holdings}
        products = {k: r["version"] for k, r in self.products.items() if k in patches.products}
        return Current(customers, holdings, products)

    @staticmethod
    def _holding(r: Row) -> dict[str, Any]:
        defaults = dict(product_id="", product_type=0, currency="", balance_micros=0, state=domain.HOLDING_OPEN)
        return {k: r.get(k, defaults.get(k)) for k in HoldingRow._fields}

    def write(self, out: Changes) -> None:
        for row in out.customer_inserts:
            self.customers[row["customer_id"]] = {k: v for k, v in row.items() if k not in ("dirty", "change_seq")}
        for row in out.customer_time_updates + out.customer_snapshot_updates:
            self.customers[row["customer_id"]].update(row)
        for row in out.holding_inserts:
            self.holdings[row["subscription_id"]] = dict(row)
        for row in out.holding_open_updates + out.holding_updates:
            self.holdings[row["subscription_id"]].update(row)
        for row in as_dicts(TRANSACTION_COLUMNS, out.transaction_inserts):
            self.transactions.setdefault(row["transaction_id"], row)
        for row in out.product_inserts + out.product_updates:
            self.products[row["product_id"]] = dict(row)

    def normalized(self) -> tuple[Any, ...]:
        return (
            self.customers,
            {k: {**self._holding(r), "customer_id": r["customer_id"]} for k, r in self.holdings.items()},
            self.transactions,
            self.products,
        )


def fold_in_batches(events: list[ReceivedEvent], size: int) -> tuple[Any, ...]:
    tables = Tables()
    for i in range(0, len(events), size):
        patches = fold(events[i : i + size])
        tables.write(changes(patches, tables.current(patches)))
    return tables.normalized()


HISTORY = [received(e) for e in Synth(seed=7, customers=8, months=3, txn_scale=0.25, prefix="fd").events()]


@pytest.mark.parametrize("size", [1, 7, 60])
def test_folding_the_history_in_any_batch_size_gives_the_rows_of_one_batch(size: int) -> None:
    assert fold_in_batches(HISTORY, size) == fold_in_batches(HISTORY, len(HISTORY))


def test_redelivered_events_and_a_second_delivery_of_the_log_change_no_row() -> None:
    rng = random.Random(3)
    redelivered = [e for e in HISTORY for _ in range(rng.choice((1, 1, 2)))]
    once = fold_in_batches(HISTORY, 25)
    assert fold_in_batches(redelivered, 25) == once
    assert fold_in_batches(HISTORY + HISTORY, 25) == once


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_interleaving_that_keeps_each_keys_order_gives_the_same_rows(seed: int) -> None:
    streams: dict[str, list[ReceivedEvent]] = {}
    for e in HISTORY:  # the partition key: customer_id, or product_id for the catalogue
        key = getattr(e.message, "customer_id", "") or getattr(e.message, "product_id", "")
        streams.setdefault(key, []).append(e)
    merged = interleave(streams, random.Random(seed))
    assert merged != HISTORY
    assert fold_in_batches(merged, 9) == fold_in_batches(HISTORY, len(HISTORY))


def test_a_transaction_record_is_in_its_tables_column_order() -> None:
    from services.data_hub import schema

    for tables in schema.SETS.values():
        assert tuple(c.name for c in tables.transactions.columns) == TRANSACTION_COLUMNS
