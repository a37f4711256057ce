"""The view's holdings, parsed from each holding's cached part, are the holdings built field by
field (services/data_hub/views.py: ``holding_part``, ``render``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bank.datahub.v1 import datahub_pb2
from services.data_hub import domain, views
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
    values = ("S-1", "dep-current", 1, "CNY", 1_000_000, 1, 1_765_000_000_000_000, None)
    first = views._holding_of(values)  # type: ignore[attr-defined]
    assert first == domain.Holding(*values)
    assert views._holding_of(tuple(list(values))) is first  # type: ignore[attr-defined]
