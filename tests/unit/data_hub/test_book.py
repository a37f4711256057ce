"""The holdings read once (``domain.book_of``) give every rule what it computed from the holdings
on its own: the same positions, balance at the cut-off, held products and types, idle balance and
recent closures, so ``derive`` is unchanged (services/data_hub/domain.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.data_hub import domain as d
from services.data_hub import features
from services.data_hub.domain import DAY_US, Rules

NOW = 1_750_000_000_000_000
RULES = Rules()
CATALOGUE = [
    d.Product("dep-current", "Current", d.TYPE_DEPOSIT, 1, d.PRODUCT_ACTIVE),
    d.Product("dep-fixed", "Fixed", d.TYPE_DEPOSIT, 1, d.PRODUCT_ACTIVE, 18, 70),
    d.Product("wm-bal", "Balanced", d.TYPE_WEALTH, 3, d.PRODUCT_ACTIVE),
    d.Product("card-gold", "Gold", d.TYPE_CARD, 2, d.PRODUCT_ACTIVE, 21, 0),
    d.Product("loan-home", "Home", d.TYPE_LOAN, 2, d.PRODUCT_ACTIVE),
]
_times = st.one_of(st.none(), st.integers(NOW - 400 * DAY_US, NOW + DAY_US))
_holdings = st.lists(
    st.builds(
        d.Holding,
        subscription_id=st.sampled_from([f"s{i}" for i in range(8)]),
        product_id=st.sampled_from([p.product_id for p in CATALOGUE] + ["gone"]),
        product_type=st.sampled_from([d.TYPE_DEPOSIT, d.TYPE_WEALTH, d.TYPE_CARD, d.TYPE_LOAN]),
        currency=st.sampled_from(["CNY", "USD"]),
        balance_micros=st.integers(-(10**12), 10**14),
        state=st.sampled_from([d.HOLDING_OPEN, d.HOLDING_CLOSED]),
        open_us=_times,
        close_us=_times,
    ),
    max_size=10,
)
_facts = st.builds(
    d.CustomerFacts,
    customer_id=st.just("c1"),
    registered=st.booleans(),
    status=st.sampled_from([d.STATUS_ACTIVE, d.STATUS_PENDING, d.STATUS_CLOSED]),
    kyc_verified=st.booleans(),
    risk_tolerance=st.integers(0, 5),
    risk_tolerance_expire_us=_times,
    birth_year=st.sampled_from([0, 1950, 1990, 2008]),
    create_us=_times,
    as_of_us=st.just(NOW),
    holdings=_holdings,
    activity=st.builds(
        d.Activity,
        count_30d=st.integers(0, 10),
        count_baseline=st.integers(0, 30),
        last_txn_us=_times,
        net_flow_since_cutoff=st.dictionaries(
            st.sampled_from([f"s{i}" for i in range(8)]), st.integers(-(10**13), 10**13)
        ),
    ),
    rfm=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
)


@given(_facts)
def test_the_book_is_what_each_rule_reads_of_the_holdings(facts: d.CustomerFacts) -> None:
    book = d.book_of(facts, RULES)
    open_ = [h for h in facts.holdings if h.state != d.HOLDING_CLOSED]
    cutoff = NOW - RULES.balance_lookback_days * DAY_US
    assert book.positions == d.positions(facts.holdings)
    assert list(book.positions) == sorted(book.positions)
    assert book.balance_at_cutoff == d.balance_at_cutoff(facts.holdings, facts.activity, cutoff, "CNY")
    assert book.held_products == {h.product_id for h in open_}
    assert book.held_types == {h.product_type for h in open_}
    assert book.idle_micros == sum(
        h.balance_micros for h in open_ if h.product_type == d.TYPE_DEPOSIT and h.currency == "CNY"
    )
    closed_cutoff = NOW - RULES.holdings_closed_days * DAY_US
    assert book.closed_recently == any(
        h.state == d.HOLDING_CLOSED and h.close_us is not None and h.close_us > closed_cutoff for h in facts.holdings
    )


@given(_facts)
def test_the_rules_read_from_the_book_decide_as_the_holdings_say(facts: d.CustomerFacts) -> None:
    derived = d.derive(facts, CATALOGUE, RULES)
    assert derived.positions == d.positions(facts.holdings)
    assert d.eligible_products(facts, CATALOGUE, d.book_of(facts, RULES)) == d.eligible_products(facts, CATALOGUE)
    if not facts.registered or facts.status == d.STATUS_CLOSED:
        return
    before = d.balance_at_cutoff(facts.holdings, facts.activity, NOW - RULES.balance_lookback_days * DAY_US, "CNY")
    now = d.positions(facts.holdings).get("CNY", 0)
    dropped = before >= RULES.balance_min_micros and now < before * (1 - RULES.balance_drop_ratio)
    closed_cutoff = NOW - RULES.holdings_closed_days * DAY_US
    closed = any(h.state == d.HOLDING_CLOSED and h.close_us is not None and h.close_us > closed_cutoff
                 for h in facts.holdings)  # fmt: skip
    assert (d.BALANCE_DROP in derived.churn.reasons) == dropped
    assert (d.HOLDINGS_CLOSED in derived.churn.reasons) == closed
    held_types = {h.product_type for h in facts.holdings if h.state != d.HOLDING_CLOSED}
    for offer in derived.offers:
        assert (d.NEW_PRODUCT_TYPE in offer.reasons) == (offer.product_type not in held_types)


@given(_facts)
def test_the_features_one_pass_is_what_each_feature_read_of_the_holdings(facts: d.CustomerFacts) -> None:
    """services/data_hub/features.py reads the holdings once (``_holdings``): the same integers
    the per-feature passes gave, so every feature (and every trained score) is unchanged."""
    held = features._holdings(facts, RULES)
    open_ = [h for h in facts.holdings if h.state != d.HOLDING_CLOSED]
    deposits = sorted(
        (h for h in open_ if h.product_type == d.TYPE_DEPOSIT), key=lambda h: (h.open_us or 0, h.subscription_id)
    )
    opens = [h.open_us for h in facts.holdings if h.open_us is not None]
    cutoff = NOW - RULES.balance_lookback_days * DAY_US
    assert held.now == d.positions(facts.holdings).get("CNY", 0)
    assert held.before == d.balance_at_cutoff(facts.holdings, facts.activity, cutoff, "CNY")
    assert (held.open_count, held.closed_count) == (len(open_), len(facts.holdings) - len(open_))
    assert held.closed_recently == sum(
        1
        for h in facts.holdings
        if h.state == d.HOLDING_CLOSED and h.close_us is not None and h.close_us > NOW - 90 * DAY_US
    )
    assert held.types == {h.product_type for h in open_}
    assert (held.deposits, held.deposit_total) == (len(deposits), sum(h.balance_micros for h in deposits))
    assert held.main_balance == (deposits[0].balance_micros if deposits else 0)
    assert held.last_open_us == (max(opens) if opens else None)
