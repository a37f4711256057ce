"""The views: stored facts -> the domain rules -> the CustomerView document (serving it and the
publisher's queue: services/data_hub/served.py).

Applying events only writes *facts* and marks the customer ``dirty`` (bumping ``change_seq``,
services/data_hub/facts.py); :func:`materialize` turns dirty facts into the view (the domain
rules) and bumps ``version`` when the document changed; :func:`pending_views` and
:func:`mark_published` (served.py) feed the debounced publisher (services/data_hub/projector.py).
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import (
    case,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bank.datahub.v1 import datahub_pb2
from services.data_hub import domain
from services.data_hub.activity import ACTIVITY, render_queries
from services.data_hub.codecs import now_us, set_money, set_ts
from services.data_hub.domain import Rules
from services.data_hub.schema import Tables, built
from services.kit import (
    bulk_update,
    bulk_update_statement,
    defer_write,
    dialect_of,
    fetch,
    in_list,
    is_postgres,
)

#: A rendered view on its way to the view topic: (customer_id, doc, version, update_us).
View = tuple[str, bytes, int, int]


@built
def _catalogue_query(t: Tables) -> Any:
    return select(t.products).order_by(t.products.c.product_id)


async def load_catalogue(session: AsyncSession, t: Tables) -> list[domain.Product]:
    rows = (await session.execute(_catalogue_query(t))).mappings().all()
    return [
        domain.Product(
            r["product_id"], r["display_name"], r["type"], r["risk_level"], r["state"], r["min_age"], r["max_age"]
        )
        for r in rows
    ]


def _facts(row: Any, holdings: list[domain.Holding], act: dict[str, Any]) -> domain.CustomerFacts:
    activity = domain.Activity(
        count_30d=int(act.get("c30") or 0),
        count_90d=int(act.get("c90") or 0),
        count_365d=int(act.get("c365") or 0),
        amount_30d_micros=int(act.get("a30") or 0),
        amount_90d_micros=int(act.get("a90") or 0),
        amount_365d_micros=int(act.get("a365") or 0),
        last_txn_us=row["last_txn_us"],
        count_baseline=int(act.get("base") or 0),
        net_flow_since_cutoff=act.get("flows", {}),
        credit_count_90d=int(act.get("cr90") or 0),
        credit_amount_90d_micros=int(act.get("cra90") or 0),
    )
    return domain.CustomerFacts(
        customer_id=row["customer_id"],
        registered=bool(row["registered"]),
        status=row["status"],
        kyc_verified=bool(row["kyc_verified"]),
        risk_tolerance=row["risk_tolerance"],
        risk_tolerance_expire_us=row["risk_expire_us"],
        birth_year=row["birth_year"],
        create_us=row["create_us"],
        as_of_us=row["as_of_us"],
        holdings=holdings,
        activity=activity,
        rfm=(row["r"], row["f"], row["m"]),
    )


_by_subscription = operator.attrgetter("subscription_id")


#: Holdings' parts by the holding's identity (the render read's holdings are the instances
#: :func:`_holding_of_line` keeps), each with the holding it was made for (the entry keeps it alive,
#: so its id is not reused while cached).
_parts: dict[int, tuple[domain.Holding, bytes]] = {}
_PARTS_MAX = 16_384


def holding_part(h: domain.Holding) -> bytes:
    """One holding as a view's encoding carries it: a view holding only it, serialized (the
    ``holdings`` field's tag, length and message). A protobuf parser appends each such part to
    the repeated field, so :func:`render` parses a view's holdings from their parts joined in
    order, in C: ~0.7 µs a holding instead of ~3.5 built field by field in Python. Cached: a
    live view's holdings mostly stay as they were at its last render (a subscription adds one,
    a posting changes one); found by identity first (no hash of the holding's fields)."""
    found = _parts.get(id(h))
    if found is not None and found[0] is h:
        return found[1]
    part = _encoded(h)
    if len(_parts) >= _PARTS_MAX:
        _parts.clear()
    _parts[id(h)] = (h, part)
    return part


@functools.lru_cache(maxsize=_PARTS_MAX)
def _encoded(h: domain.Holding) -> bytes:
    """:func:`holding_part` of an equal holding (SQLite's render read makes new instances)."""
    view = datahub_pb2.CustomerView()
    holding = view.holdings.add(
        subscription_id=h.subscription_id, product_id=h.product_id, product_type=h.product_type, state=h.state
    )  # type: ignore[arg-type]
    # (set in place: a posting changes the balance, so live postings miss this cache)
    set_money(holding.balance, h.balance_micros, h.currency)
    if h.open_us is not None:
        set_ts(holding.open_time, h.open_us)
    return view.SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=_PARTS_MAX)
def _holding_of_line(line: str) -> tuple[domain.Holding, bytes]:
    """A holding of the render read (PostgreSQL: a line of JSON, ``[subscription_id, product_id,
    …]``) and its :func:`holding_part`, cached by the line's text as the parts are: an
    unchanged holding's JSON is decoded and its part made once (a live view's holdings mostly
    stay as they were at its last render)."""
    holding = domain.Holding(*orjson.loads(line))
    return holding, holding_part(holding)


def render(
    row: Any, facts: domain.CustomerFacts, derived: domain.Derived, rules: Rules, holdings: bytes | None = None
) -> datahub_pb2.CustomerView:
    """The view document (without ``version``/``update_time``, which are set when served).
    ``holdings``: the facts' holdings' parts joined in subscription order, if the caller has
    them (PostgreSQL's render read: :func:`_holdings_and_flows_of`)."""
    a = facts.activity
    view = datahub_pb2.CustomerView(
        customer_id=facts.customer_id,
        full_name_masked=row["full_name_masked"],
        national_id_masked=row["national_id_masked"],
        mobile_masked=row["mobile_masked"],
        email_masked=row["email_masked"],
        birth_year=facts.birth_year,
        status=facts.status,  # type: ignore[arg-type]
        kyc_verified=facts.kyc_verified,
        risk_tolerance=facts.risk_tolerance,  # type: ignore[arg-type]
        segment=derived.segment,  # type: ignore[arg-type]
        lifecycle_stage=derived.lifecycle_stage,  # type: ignore[arg-type]
    )
    # (money and times are written into their fields in place: no message built and copied)
    if facts.risk_tolerance_expire_us is not None:
        set_ts(view.risk_tolerance_expire_time, facts.risk_tolerance_expire_us)
    if holdings is None and facts.holdings:
        holdings = b"".join([holding_part(h) for h in sorted(facts.holdings, key=_by_subscription)])
    if holdings:
        view.MergeFromString(holdings)
    position = view.position
    for currency, amount in derived.positions.items():
        set_money(position.add(), amount, currency)
    _set_activity(view.activity, a, rules.reporting_currency)
    r, f, m = facts.rfm
    rfm = view.rfm
    rfm.recency, rfm.frequency, rfm.monetary = r, f, m
    rfm.code = code = domain.rfm_code(facts.rfm)
    if code and row["rfm_us"] is not None:
        set_ts(rfm.score_time, row["rfm_us"])
    churn = view.churn_risk
    churn.score = derived.churn.score
    churn.reasons.extend(derived.churn.reasons)
    churn.model_version = derived.churn.model_version
    for o in derived.offers:
        view.offers.add(
            product_id=o.product_id,
            score=o.score,
            reasons=o.reasons,
            product_type=o.product_type,  # type: ignore[arg-type]
            display_name=o.display_name,
            model_version=o.model_version,
        )
    if row["last_event_us"]:
        set_ts(view.last_event_time, row["last_event_us"])
    if row["create_us"] is not None:
        set_ts(view.customer_create_time, row["create_us"])
    return view


def _set_activity(act: datahub_pb2.CustomerView.Activity, a: domain.Activity, cur: str) -> None:
    act.txn_count_30d, act.txn_count_90d, act.txn_count_365d = a.count_30d, a.count_90d, a.count_365d
    set_money(act.txn_amount_30d, a.amount_30d_micros, cur)
    set_money(act.txn_amount_90d, a.amount_90d_micros, cur)
    set_money(act.txn_amount_365d, a.amount_365d_micros, cur)
    if a.last_txn_us is not None:
        set_ts(act.last_txn_time, a.last_txn_us)


#: The catalogue last read per engine (database) and table set, with the fingerprint it was read at.
_catalogues: weakref.WeakKeyDictionary[Any, dict[str, tuple[tuple[int, int], list[domain.Product]]]] = (
    weakref.WeakKeyDictionary()
)


async def _catalogue(session: AsyncSession, t: Tables, fingerprint: tuple[int, int]) -> list[domain.Product]:
    """The catalogue, read again only when its fingerprint changed.

    Product rows are only inserted, or updated to a higher version (the fold: max version wins),
    and a rebuild refills a set from the whole log (every product at a version at least as high
    as before): so any change of the catalogue changes the count or the sum of the versions.
    (A fingerprint read before the catalogue: a change between the two reads is read again next
    time, never missed.)"""
    bind = session.get_bind()
    known = _catalogues.setdefault(getattr(bind, "engine", bind), {})
    cached = known.get(t.name)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    catalogue = await load_catalogue(session, t)
    known[t.name] = (fingerprint, catalogue)
    return catalogue


async def materialize(
    session: AsyncSession,
    t: Tables,
    rules: Rules,
    *,
    limit: int = 500,
    catalogue: list[domain.Product] | None = None,
    ids: Sequence[str] | None = None,
    written: list[View] | None = None,
    defer_write_back: bool = False,
) -> tuple[int, int]:
    """Re-render up to ``limit`` dirty views (only those of ``ids`` if given); returns
    (rendered, changed). The caller commits.

    Optimistic, without row locks while rendering: each row is written back only if it is still
    dirty at the ``change_seq`` that was read. Every fact change bumps ``change_seq`` in the
    transaction that writes the fact, so a render made from facts that changed in the meantime
    (or a row another render already wrote) is dropped and the row stays dirty for the next
    pass — a render never overwrites a newer one, and the consumer's batches never wait for a
    render (they used to queue behind ``FOR UPDATE`` locks held for the whole render).

    ``defer_write_back`` (a consumer batch, whose rows are locked and read no more): on
    PostgreSQL the write-back goes with the batch's inbox write, in one statement (kit
    ``defer_write``, ADR 0052).
    """
    dirty, holdings_q = render_queries(
        t, dialect_of(session), ids is not None, rules.reporting_currency, rules.activity_baseline_days,
        rules.balance_lookback_days,
    )  # fmt: skip
    keys: dict[str, Any] = {"limit": limit} if ids is None else {"limit": limit, "ids": list(ids)}
    rows = await fetch(session, dirty, keys)
    if not rows:
        return 0, 0
    encoded: dict[str, bytes] = {}  # (PostgreSQL: each view's holdings' parts, joined in order)
    if holdings_q is None:  # (PostgreSQL: they came with the rows)
        holdings, flows = _holdings_and_flows_of(rows, encoded)
    else:
        holdings, flows = await _holdings_and_flows(session, holdings_q, [r["customer_id"] for r in rows])
    if catalogue is None:
        catalogue = await _catalogue(session, t, (rows[0]["cat_n"], int(rows[0]["cat_v"])))
    stamp = now_us()
    params: list[dict[str, Any]] = []
    changed = 0
    for row in rows:
        cid = row["customer_id"]
        doc, param = _render_row(
            row, holdings.get(cid, []), flows.get(cid, {}), catalogue, rules, stamp, encoded.get(cid)
        )
        params.append(param)
        if param["b_inc"]:
            changed += 1
            if written is not None:
                # (customer_id, doc, version, update_us) as they will be once committed: the
                # publisher sends them without reading them back (this transaction holds the rows)
                written.append((cid, doc, row["version"] + 1, stamp))
    await _write_back(session, t, params, defer_write_back)
    return len(rows), changed


def _render_row(
    row: Any,
    holdings: list[domain.Holding],
    flows: dict[str, int],
    catalogue: list[domain.Product],
    rules: Rules,
    stamp: int,
    encoded: bytes | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """One dirty row rendered: its document and its write-back parameters (``b_inc`` 1 if the
    document changed). ``encoded``: see :func:`render`'s ``holdings``."""
    act: dict[str, Any] = {k: row[k] for k in ACTIVITY}
    act["flows"] = flows
    facts = _facts(row, holdings, act)
    derived = domain.derive(facts, catalogue, rules)
    doc = render(row, facts, derived, rules, encoded).SerializeToString(deterministic=True)
    is_changed = doc != row["doc"]
    return doc, {
        "b_id": row["customer_id"],
        "b_seq": row["change_seq"],
        "b_doc": doc,
        "b_inc": int(is_changed),
        "b_segment": derived.segment,
        "b_stage": derived.lifecycle_stage,
        "b_churn": derived.churn.score,
        "b_update_us": stamp if is_changed else row["update_us"],
    }


def _holding(hr: Any) -> domain.Holding:
    return domain.Holding(
        hr["subscription_id"],
        hr["product_id"],
        hr["product_type"],
        hr["currency"],
        hr["balance_micros"],
        hr["state"],
        hr["open_us"],
        hr["close_us"],
    )


async def _holdings_and_flows(
    session: AsyncSession, stmt: Any, ids: list[str]
) -> tuple[dict[str, list[domain.Holding]], dict[str, dict[str, int]]]:
    """The second of :func:`~services.data_hub.activity.render_queries` (SQLite): holdings per customer, net
    flow per customer and subscription."""
    holdings: dict[str, list[domain.Holding]] = {}
    flows: dict[str, dict[str, int]] = {}
    for hr in await fetch(session, stmt, {"ids": ids}):
        if hr["flow"]:
            flows.setdefault(hr["customer_id"], {})[hr["subscription_id"]] = int(hr["net"] or 0)
        else:
            holdings.setdefault(hr["customer_id"], []).append(_holding(hr))
    return holdings, flows


def _holdings_and_flows_of(
    rows: Sequence[Any], encoded: dict[str, bytes] | None = None
) -> tuple[dict[str, list[domain.Holding]], dict[str, dict[str, int]]]:
    """:func:`_holdings_and_flows` from the rows' ``holdings`` and ``flows`` (PostgreSQL's render
    read: a holding's JSON array a line, in subscription order, the flows one JSON array, sent
    as text). ``encoded`` gets each customer's holdings' parts joined in that order."""
    holdings: dict[str, list[domain.Holding]] = {}
    flows: dict[str, dict[str, int]] = {}
    holding = _holding_of_line
    for row in rows:
        cid = row["customer_id"]
        if row["holdings"]:
            found = [holding(line) for line in row["holdings"].split("\n")]
            holdings[cid] = [h for h, _ in found]
            if encoded is not None:
                encoded[cid] = b"".join([part for _, part in found])
        if row["flows"]:
            flows[cid] = {sid: int(net or 0) for sid, net in orjson.loads(row["flows"])}
    return holdings, flows


@built
def _holdings_of_query(t: Tables, dialect: str) -> Any:
    return select(t.holdings).where(in_list(dialect, t.holdings.c.customer_id, "ids"))


async def _holdings_of(session: AsyncSession, t: Tables, ids: list[str]) -> dict[str, list[domain.Holding]]:
    holdings: dict[str, list[domain.Holding]] = {}
    for hr in (await session.execute(_holdings_of_query(t, dialect_of(session)), {"ids": ids})).mappings().all():
        holdings.setdefault(hr["customer_id"], []).append(_holding(hr))
    return holdings


async def _write_back(session: AsyncSession, t: Tables, params: list[dict[str, Any]], defer: bool = False) -> None:
    """Store the rendered documents of the rows still dirty at the ``change_seq`` that was read
    (``defer``: see :func:`materialize`)."""
    c = t.customers
    types = {
        "b_id": c.c.customer_id.type,
        "b_seq": c.c.change_seq.type,
        "b_doc": c.c.doc.type,
        "b_inc": c.c.version.type,
        "b_segment": c.c.segment.type,
        "b_stage": c.c.lifecycle_stage.type,
        "b_churn": c.c.churn_score.type,
        "b_update_us": c.c.update_us.type,
    }

    def where(src: Any) -> list[Any]:
        return [c.c.customer_id == src.c.b_id, c.c.change_seq == src.c.b_seq, c.c.dirty.is_(True)]

    def values(src: Any) -> dict[str, Any]:
        return {
            "doc": src.c.b_doc,
            "version": c.c.version + src.c.b_inc,
            "pending_publish": case((src.c.b_inc == 1, True), else_=c.c.pending_publish),
            "segment": src.c.b_segment,
            "lifecycle_stage": src.c.b_stage,
            "churn_score": src.c.b_churn,
            "update_us": src.c.b_update_us,
            "dirty": False,
        }

    if defer and is_postgres(session):
        defer_write(
            session,
            bulk_update_statement(c, params, types, where=where, values=values, param="rendered", key=("hub-render",)),
        )
    else:
        await bulk_update(session, c, params, types, where=where, values=values, driver=True)
