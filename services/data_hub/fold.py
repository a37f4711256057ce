"""The data hub's fold: a batch of decoded events, plus the stored rows it touches, to row
changes. Pure: no database, no broker, no event loop — its tests need no fixtures.

Two steps, each a plain function of its inputs:

1. :func:`fold` reduces the batch's events to one patch per row (:class:`Patches`): the newest
   version of each customer snapshot, holding and product, the latest event and transaction
   times, every transaction (keyed by id). No stored row is needed for that.
2. :func:`changes` merges the patches with the stored rows they touch (:class:`Current`) into
   the rows to insert and the rows to update (:class:`Changes`), by the same rules: max version
   wins, times only move forward, an opening time only moves back, inserts are keyed. So any
   arrival order, any batching and any redelivery converge on the same rows.

services/data_hub/facts.py is the adapter: it loads :class:`Current` (locked) for the keys of
the patches and writes the :class:`Changes` in a few bulk statements. The live consumer runs
step 1 while it stages a batch and step 2 when it writes it (after the previous batch committed,
docs/adr/0012-projection-port.md); the rebuild (services/data_hub/rebuild.py) runs the same two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.protobuf.message import Message

from bank.customer.v1 import events_pb2 as customer_events
from bank.product.v1 import events_pb2 as product_events
from services.data_hub import domain
from services.data_hub.codecs import money_micros, ts_us
from services.data_hub.domain import MICROS
from services.kit.events import ReceivedEvent  # pure value type: the public face loads I/O

#: A row of column values (column name -> value), as inserted or updated.
Row = dict[str, Any]
#: A row to insert as it goes to a COPY: a tuple in its table's column order (ADR 0071).
Record = tuple[Any, ...]

#: The order of a transaction's :class:`Record` (``dh_*_transactions``' columns).
TRANSACTION_COLUMNS = (
    "transaction_id", "customer_id", "subscription_id", "direction", "amount_micros", "currency", "post_us",
)  # fmt: skip


class BadEvent(ValueError):
    """An event whose content can never be applied (goes to the DLQ after retries)."""


_CUSTOMER_EVENTS = (
    customer_events.CustomerCreated,
    customer_events.CustomerUpdated,
    customer_events.CustomerVerified,
    customer_events.CustomerRejected,
    customer_events.CustomerRiskAssessed,
    customer_events.CustomerClosed,
)


_CUSTOMER, _PRODUCT, _SUBSCRIPTION, _TRANSACTION = range(4)
_EVENT_KINDS: dict[type, int] = {
    **dict.fromkeys(_CUSTOMER_EVENTS, _CUSTOMER),
    product_events.ProductPublished: _PRODUCT,
    product_events.ProductRetired: _PRODUCT,
    product_events.SubscriptionOpened: _SUBSCRIPTION,
    product_events.SubscriptionClosed: _SUBSCRIPTION,
    product_events.TransactionPosted: _TRANSACTION,
}


@dataclass
class CustomerPatch:
    version: int = 0
    snapshot: dict[str, Any] | None = None
    last_event_us: int = 0
    last_txn_us: int | None = None


@dataclass
class HoldingPatch:
    customer_id: str
    version: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    open_us: int | None = None


@dataclass
class Patches:
    """A batch's events folded per row (max version wins), before they meet the stored rows."""

    customers: dict[str, CustomerPatch] = field(default_factory=dict)
    holdings: dict[str, HoldingPatch] = field(default_factory=dict)
    #: transaction id → its row, in :data:`TRANSACTION_COLUMNS`' order
    transactions: dict[str, Record] = field(default_factory=dict)
    products: dict[str, Row] = field(default_factory=dict)
    events: int = 0
    #: The customer event feed's rows of the batch (``dh_customer_events``, ADR 0062), in
    #: ``event_log.FEED_COLUMNS``' order: filled by the live consumer's projection, written with
    #: the batch's facts; empty for the rebuild.
    feed: list[Record] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.events > 0

    def _customer(self, customer_id: str, event_us: int) -> CustomerPatch:
        if not customer_id:
            raise BadEvent("event without customer_id")
        patch = self.customers.get(customer_id)
        if patch is None:  # (not setdefault: it would build a patch for every event)
            patch = self.customers[customer_id] = CustomerPatch()
        if event_us > patch.last_event_us:
            patch.last_event_us = event_us
        return patch

    def add(self, event: ReceivedEvent) -> None:
        msg = event.message
        # (dispatch on the exact class: isinstance on protobuf classes goes through ABCMeta)
        kind = _EVENT_KINDS.get(type(msg))
        if kind is None:
            return  # an event type the hub does not project: applied as a no-op
        occur_time = getattr(msg, "occur_time", None)
        occur = ts_us(occur_time) if occur_time is not None else None
        event_us = occur or int(event.time.timestamp() * MICROS)
        if kind == _TRANSACTION:
            self._add_transaction(msg, event_us)  # type: ignore[arg-type]
        elif kind == _SUBSCRIPTION:
            self._add_subscription(msg, event_us)  # type: ignore[arg-type]
        elif kind == _CUSTOMER:
            self._add_customer(msg, event_us)
        else:
            self._add_product(msg)  # type: ignore[arg-type]
        self.events += 1

    def _add_customer(self, msg: Message, event_us: int) -> None:
        snap: customer_events.CustomerSnapshot = msg.customer  # type: ignore[attr-defined]
        customer_id = msg.customer_id or snap.customer_id  # type: ignore[attr-defined]
        version = int(msg.version or snap.version)  # type: ignore[attr-defined]
        patch = self._customer(customer_id, event_us)
        if version > patch.version:
            patch.version = version
            create_us = ts_us(snap.create_time)
            if create_us is None and isinstance(msg, customer_events.CustomerCreated):
                create_us = event_us
            patch.snapshot = {
                "registered": True,
                "customer_version": version,
                "status": int(snap.status),
                "kyc_verified": bool(snap.kyc_verified),
                "risk_tolerance": int(snap.risk_tolerance),
                "risk_expire_us": ts_us(snap.risk_tolerance_expire_time),
                "birth_year": int(snap.birth_year),
                "full_name_masked": snap.full_name_masked,
                "national_id_masked": snap.national_id_masked,
                "mobile_masked": snap.mobile_masked,
                "email_masked": snap.email_masked,
                "create_us": create_us,
            }

    def _add_product(self, msg: product_events.ProductPublished | product_events.ProductRetired) -> None:
        p = msg.product
        product_id = msg.product_id or p.product_id
        if not product_id:
            raise BadEvent("product event without product_id")
        version = int(msg.version or p.version)
        current = self.products.get(product_id)
        if current is not None and current["version"] >= version:
            return
        state = int(p.state) or (domain.PRODUCT_ACTIVE if isinstance(msg, product_events.ProductPublished) else 3)
        self.products[product_id] = {
            "product_id": product_id,
            "display_name": p.display_name,
            "type": int(p.type),
            "risk_level": int(p.risk_level),
            "state": state,
            "min_age": int(p.eligibility.min_age),
            "max_age": int(p.eligibility.max_age),
            "version": version,
        }

    def _holding(self, subscription_id: str, customer_id: str) -> HoldingPatch:
        if not subscription_id:
            raise BadEvent("event without subscription_id")
        patch = self.holdings.get(subscription_id)
        if patch is None:
            patch = self.holdings[subscription_id] = HoldingPatch(customer_id)
        return patch

    def _add_subscription(
        self, msg: product_events.SubscriptionOpened | product_events.SubscriptionClosed, event_us: int
    ) -> None:
        s = msg.subscription
        customer_id = msg.customer_id or s.customer_id
        self._customer(customer_id, event_us)
        patch = self._holding(msg.subscription_id or s.subscription_id, customer_id)
        opened = ts_us(s.create_time) or (event_us if isinstance(msg, product_events.SubscriptionOpened) else None)
        if opened is not None:
            patch.open_us = opened if patch.open_us is None else min(patch.open_us, opened)
        version = int(msg.version or s.version)
        if version > patch.version:
            patch.version = version
            balance = s.balance if s.HasField("balance") else s.amount
            closed = isinstance(msg, product_events.SubscriptionClosed) or s.state == domain.HOLDING_CLOSED
            patch.fields = {
                "product_id": s.product_id,
                "product_type": int(s.product_type),
                "currency": balance.currency_code or s.amount.currency_code,
                "balance_micros": money_micros(balance),
                "state": domain.HOLDING_CLOSED if closed else domain.HOLDING_OPEN,
                "close_us": (ts_us(s.close_time) or event_us) if closed else None,
            }

    def _add_transaction(self, msg: product_events.TransactionPosted, event_us: int) -> None:
        # The hot path of a bulk ingest: each protobuf field is read once.
        t = msg.transaction
        customer_id = msg.customer_id or t.customer_id
        cpatch = self._customer(customer_id, event_us)
        transaction_id = t.transaction_id
        if not transaction_id:
            raise BadEvent("transaction without transaction_id")
        direction = t.direction
        if direction != domain.DIRECTION_CREDIT and direction != domain.DIRECTION_DEBIT:
            raise BadEvent("transaction without a direction")
        amount = t.amount
        currency = amount.currency_code
        if len(currency) != 3:
            raise BadEvent("transaction amount without a currency")
        subscription_id = msg.subscription_id or t.subscription_id
        post_us = ts_us(t.post_time) or event_us
        if cpatch.last_txn_us is None or post_us > cpatch.last_txn_us:
            cpatch.last_txn_us = post_us
        self.transactions[transaction_id] = (
            transaction_id, customer_id, subscription_id, direction, money_micros(amount), currency, post_us,
        )  # fmt: skip
        patch = self._holding(subscription_id, customer_id)
        version = msg.version
        if version > patch.version:
            patch.version = version
            fields = patch.fields
            balance = t.balance_after
            fields["product_id"] = msg.product_id or fields.get("product_id", "")
            fields["product_type"] = msg.product_type or fields.get("product_type", 0)
            fields["currency"] = balance.currency_code or currency
            fields["balance_micros"] = money_micros(balance)


def fold(events: Iterable[ReceivedEvent]) -> Patches:
    """Step 1: the batch's events, in order, folded per row. Raises :class:`BadEvent` for an
    event that can never be applied."""
    patches = Patches()
    for event in events:
        patches.add(event)
    return patches


# --------------------------------------------------------------------------------------------
# Step 2: the patches merged with the stored rows they touch
# --------------------------------------------------------------------------------------------


class CustomerRow(NamedTuple):
    """What a merge reads of a stored customer row."""

    customer_version: int
    last_event_us: int
    last_txn_us: int | None
    as_of_us: int


class HoldingRow(NamedTuple):
    """What a merge reads of a stored holding row."""

    version: int
    open_us: int | None
    product_id: str
    product_type: int
    currency: str
    balance_micros: int
    state: int
    close_us: int | None


@dataclass
class Current:
    """The stored rows of a batch's keys (a key without a row is not there yet)."""

    customers: Mapping[str, CustomerRow] = field(default_factory=dict)
    holdings: Mapping[str, HoldingRow] = field(default_factory=dict)
    product_versions: Mapping[str, int] = field(default_factory=dict)


CUSTOMER_SNAPSHOT_COLUMNS = (
    "registered",
    "customer_version",
    "status",
    "kyc_verified",
    "risk_tolerance",
    "risk_expire_us",
    "birth_year",
    "full_name_masked",
    "national_id_masked",
    "mobile_masked",
    "email_masked",
    "create_us",
)
CUSTOMER_TIME_COLUMNS = ("last_event_us", "as_of_us", "last_txn_us")
HOLDING_COLUMNS = ("product_id", "product_type", "currency", "balance_micros", "state", "close_us")


@dataclass
class Changes:
    """The rows a batch inserts and updates (each list in key order). A customer row that is
    inserted or updated is marked dirty (its view must be rendered again); columns a row does
    not carry keep their stored value (or their default, when inserted)."""

    #: new customers: the times, the snapshot if one arrived (else a stub), dirty
    customer_inserts: list[Row] = field(default_factory=list)
    #: customer_id + :data:`CUSTOMER_TIME_COLUMNS` + :data:`CUSTOMER_SNAPSHOT_COLUMNS`
    customer_snapshot_updates: list[Row] = field(default_factory=list)
    #: customer_id + :data:`CUSTOMER_TIME_COLUMNS` (no newer snapshot)
    customer_time_updates: list[Row] = field(default_factory=list)
    holding_inserts: list[Row] = field(default_factory=list)
    #: subscription_id, open_us, version + :data:`HOLDING_COLUMNS`
    holding_updates: list[Row] = field(default_factory=list)
    #: subscription_id, open_us (an earlier opening time, nothing newer)
    holding_open_updates: list[Row] = field(default_factory=list)
    #: insert-only, in :data:`TRANSACTION_COLUMNS`' order: an id already stored is skipped
    transaction_inserts: list[Record] = field(default_factory=list)
    product_inserts: list[Row] = field(default_factory=list)
    product_updates: list[Row] = field(default_factory=list)

    @property
    def catalogue_changed(self) -> bool:
        """Offers depend on the catalogue: when it changed every view must be rendered again."""
        return bool(self.product_inserts or self.product_updates)


def changes(patches: Patches, current: Current) -> Changes:
    """Step 2: merge the patches with the stored rows of their keys."""
    out = Changes(transaction_inserts=list(patches.transactions.values()))
    _customer_changes(patches, current.customers, out)
    _holding_changes(patches, current.holdings, out)
    _product_changes(patches, current.product_versions, out)
    return out


def _customer_changes(patches: Patches, stored: Mapping[str, CustomerRow], out: Changes) -> None:
    for cid in sorted(patches.customers):
        patch = patches.customers[cid]
        row = stored.get(cid)
        if row is None:
            values: Row = {
                "customer_id": cid,
                "last_event_us": patch.last_event_us,
                "as_of_us": patch.last_event_us,
                "last_txn_us": patch.last_txn_us,
                "dirty": True,
                "change_seq": 1,
            }
            if patch.snapshot is not None:
                values.update(patch.snapshot)
            out.customer_inserts.append(values)
            continue
        last_txn = row.last_txn_us
        if patch.last_txn_us is not None:
            last_txn = patch.last_txn_us if last_txn is None else max(last_txn, patch.last_txn_us)
        times = {
            "customer_id": cid,
            "last_event_us": max(row.last_event_us, patch.last_event_us),
            "as_of_us": max(row.as_of_us, patch.last_event_us),
            "last_txn_us": last_txn,
        }
        if patch.snapshot is not None and patch.version > row.customer_version:
            out.customer_snapshot_updates.append({**times, **patch.snapshot})
        else:
            out.customer_time_updates.append(times)


def _holding_changes(patches: Patches, stored: Mapping[str, HoldingRow], out: Changes) -> None:
    for sid in sorted(patches.holdings):
        patch = patches.holdings[sid]
        row = stored.get(sid)
        if row is None:
            out.holding_inserts.append(
                {
                    "subscription_id": sid,
                    "customer_id": patch.customer_id,
                    "open_us": patch.open_us,
                    "version": patch.version,
                    **patch.fields,
                }
            )
            continue
        open_us = row.open_us
        if patch.open_us is not None:
            open_us = patch.open_us if open_us is None else min(open_us, patch.open_us)
        if patch.version > row.version and patch.fields:
            # A transaction-only patch lacks the state: the row's own values fill what it does not carry.
            merged = {k: patch.fields.get(k, getattr(row, k)) for k in HOLDING_COLUMNS}
            out.holding_updates.append({"subscription_id": sid, "open_us": open_us, "version": patch.version, **merged})
        elif open_us != row.open_us:
            out.holding_open_updates.append({"subscription_id": sid, "open_us": open_us})


def _product_changes(patches: Patches, stored: Mapping[str, int], out: Changes) -> None:
    for pid in sorted(patches.products):
        product = patches.products[pid]
        version = stored.get(pid)
        if version is None:
            out.product_inserts.append(product)
        elif product["version"] > version:
            out.product_updates.append(product)
