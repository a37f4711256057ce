"""The view's holdings, parsed from each holding's cached part, are the holdings built field by
field (services/data_hub/views.py: ``holding_part``, ``render``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bank.datahub.v1 import datahub_pb2
from services.data_hub import domain, served, views
from services.data_hub.codecs import micros_money, us_ts

_holdings = st.lists(
    st.builds(
        domain.Holding,
        subscription_id=st.text(min_size=1, max_size=12),
        product_id=st.text(max_size=8),
        product_type=st.integers(0, 4),
        currency=st.sampled_from(["CNY", "USD", ""]),
        balance_micros=st.integers(-(10**15), 10**15),
        state=st.integers(0, 3),
        open_us=st.one_of(st.none(), st.integers(0, 4_000_000_000_000_000)),
        close_us=st.none(),
    ),
    max_size=12,
    unique_by=lambda h: h.subscription_id,
)


def _built(customer_id: str, holdings: list[domain.Holding]) -> bytes:
    """The view's holdings as render built them before the parts: one message at a time."""
    view = datahub_pb2.CustomerView(customer_id=customer_id, birth_year=1980)
    for h in sorted(holdings, key=lambda h: h.subscription_id):
        holding = view.holdings.add(
            subscription_id=h.subscription_id, product_id=h.product_id, product_type=h.product_type, state=h.state
        )  # type: ignore[arg-type]
        holding.balance.CopyFrom(micros_money(h.balance_micros, h.currency))
        if (ts := us_ts(h.open_us)) is not None:
            holding.open_time.CopyFrom(ts)
    view.position.append(micros_money(5, "CNY"))  # (a field after the holdings)
    return view.SerializeToString(deterministic=True)


@given(_holdings)
def test_holdings_parsed_from_their_parts_are_the_holdings_built_one_by_one(holdings: list[domain.Holding]) -> None:
    view = datahub_pb2.CustomerView(customer_id="C-1", birth_year=1980)
    ordered = sorted(holdings, key=lambda h: h.subscription_id)
    view.MergeFromString(b"".join(views.holding_part(h) for h in ordered))
    view.position.append(micros_money(5, "CNY"))
    assert view.SerializeToString(deterministic=True) == _built("C-1", holdings)
    assert [h.subscription_id for h in view.holdings] == [h.subscription_id for h in ordered]


def test_a_holding_of_the_render_read_is_the_same_instance_each_time() -> None:
    values = ["S-1", "dep-current", 1, "CNY", 1_000_000, 1, 1_765_000_000_000_000, None]
    line = '["S-1", "dep-current", 1, "CNY", 1000000, 1, 1765000000000000, null]'  # (PostgreSQL's json text)
    first, part = views._holding_of_line(line)  # type: ignore[attr-defined]
    assert first == domain.Holding(*values) and part == views.holding_part(first)
    assert views._holding_of_line("".join(list(line)))[0] is first  # type: ignore[attr-defined]


def test_the_render_read_splits_its_holdings_by_line_and_keeps_escaped_newlines() -> None:
    lines = ['["S-1", "p", 1, "CNY", -5, 1, null, null]', '["S-2\\n", "p\\nq", 2, "USD", 7, 2, 3, 4]']
    rows = [{"customer_id": "C-1", "holdings": "\n".join(lines), "flows": '[["S-1", 12], ["S-2", null]]'}]
    encoded: dict[str, bytes] = {}
    holdings, flows = views._holdings_and_flows_of(rows, encoded)  # type: ignore[attr-defined]
    assert holdings == {
        "C-1": [
            domain.Holding("S-1", "p", 1, "CNY", -5, 1, None, None),
            domain.Holding("S-2\n", "p\nq", 2, "USD", 7, 2, 3, 4),
        ]
    }
    assert flows == {"C-1": {"S-1": 12, "S-2": 0}}
    assert encoded == {"C-1": b"".join(views.holding_part(h) for h in holdings["C-1"])}


_times = st.one_of(st.none(), st.just(0), st.integers(1, 4_000_000_000_000_000))
_amounts = st.integers(-(10**15), 10**15)


@given(
    expire=_times, last_txn=_times, rfm_us=_times, last_event=_times, created=_times,
    amounts=st.tuples(_amounts, _amounts, _amounts), rfm=st.sampled_from([(0, 0, 0), (5, 4, 3)]),
    positions=st.dictionaries(st.sampled_from(["CNY", "USD", ""]), _amounts),
)  # fmt: skip
def test_the_view_written_in_place_is_the_view_built_from_copied_messages(
    expire: int | None, last_txn: int | None, rfm_us: int | None, last_event: int | None, created: int | None,
    amounts: tuple[int, int, int], rfm: tuple[int, int, int], positions: dict[str, int],
) -> None:  # fmt: skip
    rules = domain.Rules()
    activity = domain.Activity(amount_30d_micros=amounts[0], amount_90d_micros=amounts[1],
                               amount_365d_micros=amounts[2], last_txn_us=last_txn)  # fmt: skip
    facts = domain.CustomerFacts("C-1", True, 2, True, 3, expire, 1980, created, 10**15, (), activity, rfm)
    churn = domain.Churn(0.25, ("DORMANT",))
    derived = domain.Derived(dict(sorted(positions.items())), churn, 3, 2, ())
    row = {"full_name_masked": "Z*", "national_id_masked": "1*", "mobile_masked": "1*", "email_masked": "a*",
           "rfm_us": rfm_us, "last_event_us": last_event, "create_us": created}  # fmt: skip
    view = datahub_pb2.CustomerView(customer_id="C-1", full_name_masked="Z*", national_id_masked="1*",
                                    mobile_masked="1*", email_masked="a*", birth_year=1980, status=2,
                                    kyc_verified=True, risk_tolerance=3, segment=2, lifecycle_stage=3)  # type: ignore[arg-type]  # fmt: skip
    if (ts := us_ts(expire)) is not None:
        view.risk_tolerance_expire_time.CopyFrom(ts)
    for currency, amount in sorted(positions.items()):
        view.position.append(micros_money(amount, currency))
    for field, amount in zip(("txn_amount_30d", "txn_amount_90d", "txn_amount_365d"), amounts, strict=True):
        getattr(view.activity, field).CopyFrom(micros_money(amount, "CNY"))
    if (ts := us_ts(last_txn)) is not None:
        view.activity.last_txn_time.CopyFrom(ts)
    view.rfm.recency, view.rfm.frequency, view.rfm.monetary = rfm
    view.rfm.code = domain.rfm_code(rfm)
    if (ts := us_ts(rfm_us)) is not None and view.rfm.code:
        view.rfm.score_time.CopyFrom(ts)
    view.churn_risk.score, view.churn_risk.model_version = 0.25, "rules"
    view.churn_risk.reasons.append("DORMANT")
    if (ts := us_ts(last_event or None)) is not None:
        view.last_event_time.CopyFrom(ts)
    if (ts := us_ts(created)) is not None:
        view.customer_create_time.CopyFrom(ts)
    rendered = views.render(row, facts, derived, rules)
    assert rendered.SerializeToString(deterministic=True) == view.SerializeToString(deterministic=True)


@given(_holdings, st.integers(1, 2**62), st.one_of(st.just(0), st.integers(1, 4_000_000_000_000_000)))
def test_a_published_view_parses_to_the_served_view(
    holdings: list[domain.Holding], version: int, update_us: int
) -> None:
    doc = datahub_pb2.CustomerView(customer_id="C-1", birth_year=1980)
    doc.MergeFromString(b"".join(views.holding_part(h) for h in sorted(holdings, key=lambda h: h.subscription_id)))
    doc.last_event_time.seconds = 5  # (a field after ``version``)
    stored = doc.SerializeToString(deterministic=True)
    published = datahub_pb2.CustomerView.FromString(served.served_encoding(stored, version, update_us))
    assert published == served.served(stored, version, update_us)
    assert published.version == version and published.HasField("update_time") == bool(update_us)
