"""`zhongtai reconcile` finds what does not add up, and says nothing when everything does.

The product's own migrations on a real PostgreSQL database; rows written as the service writes
them (a subscription, its postings, outbox rows). The clean case and the views part run in the
chaos suite (tests/integration/chaos) against the real platform."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services import reconcile
from services.kit.migrations import upgrade
from services.product.main import MIGRATIONS

NOW = datetime.now(UTC)


async def _ledger(url: str, *, balance: int, unpublished_age_s: float | None = None) -> None:
    engine = create_async_engine(url)
    try:
        await upgrade(engine, MIGRATIONS)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO products (product_id, display_name, description, type, risk_level, state, currency,"
                    " term_months, annual_rate_bps, min_age, max_age, version, create_time, update_time)"
                    " VALUES ('p-1', 'Deposit', '', 1, 1, 2, 'CNY', 12, 250, 18, 70, 1, :now, :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO subscriptions (subscription_id, customer_id, product_id, product_type, currency,"
                    " amount_minor, balance_minor, no_overdraft, state, version, create_time, update_time)"
                    " VALUES ('s-1', 'c-1', 'p-1', 1, 'CNY', 10000, :balance, true, 1, 3, :now, :now)"
                ),
                {"balance": balance, "now": NOW},
            )
            for n, (direction, amount) in enumerate([(1, 500), (2, 200)]):
                await conn.execute(
                    text(
                        "INSERT INTO transactions (transaction_id, subscription_id, customer_id, direction, currency,"
                        " amount_minor, balance_after_minor, description, post_time)"
                        " VALUES (:id, 's-1', 'c-1', :d, 'CNY', :a, 0, '', :now)"
                    ),
                    {"id": f"t-{n}", "d": direction, "a": amount, "now": NOW},
                )
            if unpublished_age_s is not None:
                await conn.execute(
                    text(
                        "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, aggregate_version,"
                        " topic, key, payload, headers, created_at, attempts)"
                        " VALUES ('e-1', 'x', 'subscription', 's-1', 1, 'bank.subscription.v1', '', '', '{}', :t, 0)"
                    ),
                    {"t": NOW - timedelta(seconds=unpublished_age_s)},
                )
    finally:
        await engine.dispose()


async def test_balances_that_match_their_postings_reconcile(pg_url: str) -> None:
    await _ledger(pg_url, balance=10_300)
    report = await reconcile.reconcile(reconcile.Sources(product_db=pg_url))
    assert report.clean, report.differences
    assert report.figures["subscriptions"] == 1 and report.figures["postings"] == 2


async def test_a_balance_off_its_postings_is_a_difference_and_the_command_exits_1(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _ledger(pg_url, balance=10_301)
    report = await reconcile.reconcile(reconcile.Sources(product_db=pg_url))
    assert report.differences == ["ledger: subscription s-1 balance 10301 != opening 10000 + postings = 10300"]
    assert await _main(["--product-db", pg_url]) == 1
    assert "DIFFERENCE ledger: subscription s-1" in capsys.readouterr().out


async def test_an_event_left_in_the_outbox_is_a_difference_only_once_it_is_late(pg_url: str) -> None:
    await _ledger(pg_url, balance=10_300, unpublished_age_s=60)
    report = await reconcile.reconcile(reconcile.Sources(product_db=pg_url))
    assert len(report.differences) == 1 and "outbox: product event e-1" in report.differences[0]


async def _main(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(reconcile.main, argv)
