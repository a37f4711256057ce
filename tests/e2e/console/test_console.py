"""The staff console's pages in a real Chromium against the real stack (conftest.py)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.console.conftest import Stack, open_console, run_async, screenshot

pytestmark = pytest.mark.timeout(600)

READER = ["customers:read", "products:read", "subscriptions:read", "views:read"]
#: 18 characters of a mainland resident id: what must never show in clear without pii:read.
NATIONAL_ID = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9])")


def _holder(stack: Stack, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The index-th seeded customer whose view has holdings, with that view."""
    found = []
    for customer in stack.customers:
        view = stack.api("GET", f"/v1/customers/{customer['customerId']}/view")
        if view["holdings"]:
            found.append((customer, view))
    return found[index]


def _expect_text(page: Page, selector: str, text: str, timeout_s: float) -> float:
    """Seconds until ``selector`` shows ``text``."""
    started = time.monotonic()
    expect(page.locator(selector)).to_have_text(text, timeout=timeout_s * 1000)
    return time.monotonic() - started


def test_360_view_shows_the_customers_holdings(browser: Browser, console_stack: Stack) -> None:
    customer, view = _holder(console_stack, 0)
    page = open_console(browser, console_stack, READER)
    page.goto(f"{console_stack.url}/console/#/customers/{customer['customerId']}")
    rows = page.locator("#holdings-table tbody tr")
    expect(rows).to_have_count(len(view["holdings"]), timeout=10_000)
    expect(rows.first).to_contain_text(view["holdings"][0]["productId"])
    expect(page.locator("#view-version")).to_have_text(str(view["version"]))
    expect(page.locator("#segment")).not_to_be_empty()
    # ECharts loads on demand (console/src/pages/common.js), so the chart may draw after the table
    expect(page.locator("#activity-chart canvas")).to_have_count(1, timeout=10_000)
    expect(page.locator("#events-table tbody tr")).not_to_have_count(0)  # the hub's event feed
    shown = page.locator("#events-table [data-type]").evaluate_all("els => els.map(e => e.dataset.type)")
    feed = console_stack.api("GET", f"/v1/customers/{customer['customerId']}/events", params={"pageSize": "200"})
    assert set(shown) <= {e["eventType"] for e in feed["events"]}, shown
    assert len({e["eventType"] for e in feed["events"]}) > 1  # not only postings: every type the hub received
    expect(page.locator("#transactions-table tbody tr")).not_to_have_count(0)
    timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].toJSON())")
    print(f"console navigation timing: {timing}")
    screenshot(page, "customer-360")
    page.context.close()


def test_a_posted_transaction_appears_within_seconds(browser: Browser, console_stack: Stack) -> None:
    customer, view = _holder(console_stack, 1)
    cid, sub = customer["customerId"], view["holdings"][0]["subscriptionId"]
    page = open_console(browser, console_stack, READER)
    page.goto(f"{console_stack.url}/console/#/customers/{cid}")
    before = int(view["activity"]["txnCount30d"])
    expect(page.locator("#txn-30")).to_have_text(str(before), timeout=10_000)
    console_stack.api(
        "POST", f"/v1/customers/{cid}/subscriptions/{sub}/transactions",
        json={"direction": "DIRECTION_CREDIT", "amount": {"currencyCode": "CNY", "units": "88"}},
        headers={"idempotency-key": uuid.uuid4().hex},
    )  # fmt: skip
    waited = _expect_text(page, "#txn-30", str(before + 1), 10)
    print(f"posted transaction shown by the console after {waited:.2f} s")
    expect(page.locator("#transactions-table")).to_contain_text("88")
    latest = page.locator("#events-table [data-type]").first
    expect(latest).to_have_attribute("data-type", "bank.product.v1.TransactionPosted", timeout=10_000)
    page.context.close()


def test_without_pii_read_no_clear_national_id_reaches_the_page(browser: Browser, console_stack: Stack) -> None:
    clear = {c["customerId"]: c["nationalId"] for c in console_stack.customers}
    assert all(NATIONAL_ID.fullmatch(v) for v in clear.values())  # (the fixture read them with pii:read)
    page = open_console(browser, console_stack, READER)
    bodies: list[Any] = []
    page.on("response", lambda response: bodies.append(response))
    customer, _ = _holder(console_stack, 0)
    page.reload()  # (the listener sees the console's own files too)
    pages = {
        "customers": "#customer-list",
        f"customers/{customer['customerId']}": "#events-table",
        "segments": "#members-table",
        "churn": "#watch-table",
    }
    texts, urls = [], []
    for route, selector in pages.items():
        page.goto(f"{console_stack.url}/console/#/{route}")
        page.wait_for_selector(selector)
        texts.append(page.content())
        if route.startswith("customers/"):
            expect(page.locator("#reveal")).to_have_count(0)
            masked = page.locator('[data-field="nationalId"]').inner_text()
            cleartext = clear[customer["customerId"]]
            assert masked[:6] == cleartext[:6] and masked[-4:] == cleartext[-4:] and "*" in masked
    for response in bodies:
        try:
            texts.append(response.text())
        except Exception:  # noqa: S112 - a redirect or an aborted request has no body: nothing to check
            continue
        urls.append(response.url)
    called_routes = ("/v1/customers?", "/view", "/events", "/transactions", "/v1/segments", "/v1/churnRisks")
    for called in (*called_routes, "/console/app.js"):
        assert any(called in url for url in urls), f"no response from {called} was checked"
    for text in texts:
        assert not set(clear.values()) & set(NATIONAL_ID.findall(text)), "a clear national id reached the page"
    page.context.close()
    # With pii:read the clear value is one (audited) click away.
    page = open_console(browser, console_stack, [*READER, "pii:read"])
    page.goto(f"{console_stack.url}/console/#/customers/{customer['customerId']}")
    page.click("#reveal")
    expect(page.locator('[data-field="nationalId"]')).to_have_text(clear[customer["customerId"]])
    page.context.close()


def test_a_poison_event_is_replayed_from_the_console_exactly_once(browser: Browser, console_stack: Stack) -> None:
    customer, view = _holder(console_stack, 2)
    cid, sub = customer["customerId"], view["holdings"][0]["subscriptionId"]
    hub_db = console_stack.platform.databases["data_hub"].replace("postgresql+asyncpg", "postgresql")
    _sql(hub_db, REFUSE, *(TRIGGER.format(set=s) for s in ("a", "b")))  # the cause: the hub refuses the row
    before = int(view["activity"]["txnCount365d"])
    console_stack.api(
        "POST", f"/v1/customers/{cid}/subscriptions/{sub}/transactions",
        json={"direction": "DIRECTION_CREDIT", "amount": {"currencyCode": "CNY", "units": "13", "nanos": 370000000}},
        headers={"idempotency-key": uuid.uuid4().hex},
    )  # fmt: skip
    page = open_console(browser, console_stack, [*READER, "ops:admin"], locale="en")
    page.goto(f"{console_stack.url}/console/#/ops")
    dead = page.locator("#dead-letter-table tbody tr", has_text=cid)
    expect(dead.locator("[data-state]")).to_have_text("Dead", timeout=60_000)
    expect(dead).to_contain_text("refused by the test")
    assert "payload" not in dead.inner_text().lower()
    for capability in ("customer", "product", "data_hub"):  # every service's outbox backlog, a number
        expect(page.locator(f"#outbox-{capability}")).to_have_text(re.compile(r"^[0-9]+$"))
    screenshot(page, "operations")
    dead.locator("button[data-act=replay]").click()  # the cause is still there: it stays dead
    expect(page.locator("#toast")).to_contain_text("still fails", timeout=10_000)
    expect(dead.locator("[data-state]")).to_have_text("Dead")
    _sql(hub_db, *(f"DROP TRIGGER refuse_poison ON dh_{s}_transactions" for s in ("a", "b")))  # fixed
    page.locator("#dead-letter-table tbody tr", has_text=cid).locator("button[data-act=replay]").click()
    expect(dead.locator("[data-state]")).to_have_text("Replayed", timeout=10_000)
    expect(dead).to_contain_text("APPLIED")
    dead_id = dead.locator("strong").inner_text()
    again = console_stack.api("POST", f"/v1/deadLetters/{dead_id}:replay", json={})
    assert again["state"] == "STATE_REPLAYED"
    after = console_stack.api("GET", f"/v1/customers/{cid}/view")
    assert int(after["activity"]["txnCount365d"]) == before + 1  # applied exactly once
    page.context.close()


def test_the_segments_chart_shows_the_counts(browser: Browser, console_stack: Stack) -> None:
    counts = console_stack.api("GET", "/v1/segments")
    page = open_console(browser, console_stack, [*READER, "segments:admin"])
    page.goto(f"{console_stack.url}/console/#/segments")
    expect(page.locator("#total")).to_have_text(str(counts["totalCustomers"]), timeout=10_000)
    # the counts can show before the on-demand ECharts script has loaded and drawn the chart
    expect(page.locator("#segments-chart canvas")).to_have_count(1, timeout=10_000)
    option = page.evaluate(
        "(() => { const o = echarts.getInstanceByDom(document.getElementById('segments-chart')).getOption();"
        " return {x: o.xAxis[0].data, series: o.series.map(s => s.data)}; })()"
    )
    shown = [sum(series[i] for series in option["series"]) for i in range(len(option["x"]))]
    assert shown == [int(s["customerCount"]) for s in counts["segments"]]
    for s in counts["segments"]:
        expect(page.locator(f'[data-segment="{s["segment"]}"]')).to_have_text(str(s["customerCount"]))
    expect(page.locator("#members-table tbody tr")).not_to_have_count(0)
    expect(page.locator("#refresh")).to_be_visible()
    screenshot(page, "segments")
    page.goto(f"{console_stack.url}/console/#/churn")
    expect(page.locator("#watch-table tbody tr")).not_to_have_count(0, timeout=10_000)
    screenshot(page, "churn-watch-list")
    page.context.close()


def test_chinese_and_english_labels_switch(browser: Browser, console_stack: Stack) -> None:
    page = open_console(browser, console_stack, READER)
    nav = page.locator('[data-nav="segments"]')
    expect(nav).to_have_text("客群")
    expect(page.locator("h1")).to_have_text("客户查询与 360° 视图")
    page.click("#lang")
    expect(nav).to_have_text("Segments")
    expect(page.locator("h1")).to_have_text("Customer search and 360° view")
    page.reload()  # the choice is remembered
    expect(nav).to_have_text("Segments")
    page.click("#lang")
    expect(nav).to_have_text("客群")
    page.goto(f"{console_stack.url}/console/#/signin")
    screenshot(page, "sign-in")
    page.context.close()


REFUSE = """CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test: %', NEW.transaction_id; END $$"""
TRIGGER = """CREATE TRIGGER refuse_poison BEFORE INSERT ON dh_{set}_transactions FOR EACH ROW
WHEN (NEW.amount_micros = 13370000) EXECUTE FUNCTION refuse_poison()"""


def _sql(url: str, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_async(run())
