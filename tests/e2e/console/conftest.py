"""The staff console in a real Chromium (Debian's ``chromium``, driven by Playwright for Python
through ``executable_path``; Playwright never downloads a browser here), against the real stack:
Apache Kafka, PostgreSQL, the three services and the gateway as processes (tests/support/platform.py).

The platform gets demo data through the services' own APIs (``devtools.synth.seed_via_grpc``)
plus a synthetic history published as the services would (months of transactions, so segments
and churn risks have something to show). Screenshots of each page go to ``docs/screenshots/``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from devtools import stack
from devtools.synth import Synth, produce, seed_via_grpc
from services.cli import DEV_SECRET
from services.kit.auth import ALL_SCOPES, mint_token
from tests.support.platform import Platform, running_platform

T = TypeVar("T")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
ADMIN = mint_token(DEV_SECRET, ALL_SCOPES, client_id="console-tests")


def chromium_path() -> str:
    found = os.environ.get("ZT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is needed for the console tests: apt-get install -y chromium (.ci/run does it)")
    return found


@dataclass
class Stack:
    platform: Platform
    customers: list[dict[str, Any]]  # seeded customers (clear PII, from the API with pii:read)

    @property
    def url(self) -> str:
        return self.platform.url

    def api(self, method: str, path: str, token: str = ADMIN, **kwargs: Any) -> Any:
        headers = {"authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        response = httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a thread of its own: Playwright's sync API keeps an event
    loop running in the test's thread, where ``asyncio.run`` refuses to start another."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def console_stack(
    kafka_server: stack.KafkaLike, postgres_server: stack.PostgresLike, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("console-logs")
    common = {"ZT_OUTBOX_POLL_INTERVAL_S": "0.2"}
    # dev: the gateway offers the console's dev-token minting (it does not exist elsewhere)
    extra = {"gateway": {"ZT_ENVIRONMENT": "dev"}, "data_hub": {"ZT_DATAHUB_MAX_ATTEMPTS": "2"}}
    with running_platform(kafka_server, postgres_server, logs, common=common, extra=extra) as platform:
        procs = platform.processes
        run_async(seed_via_grpc(procs["customer"].target, procs["product"].target, ADMIN, customers=8, seed=22))
        history = Synth(seed=3, customers=40, months=6, prefix="syn", txn_scale=0.3).records()
        run_async(produce(history, kafka_server.bootstrap_servers, client_id="console-tests"))
        running = Stack(platform, [])
        listed = running.api("GET", "/v1/customers", params={"pageSize": 50})["customers"]
        running.customers = listed

        def built() -> bool:
            segments = running.api("GET", "/v1/segments")
            return int(segments["totalCustomers"]) >= len(listed) + 30

        _wait(built, 120, "the views of the seeded and synthetic customers")
        running.api("POST", "/v1/segments:refresh", json={})
        yield running


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is started, and pytest-asyncio cannot run the async tests of later modules meanwhile.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    yield browser
    browser.close()


def open_console(browser: Browser, stack: Stack, scopes: list[str], *, locale: str = "zh-CN") -> Page:
    """A fresh browser context signed in through the console's own dev-token form."""
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(stack.url + "/console/#/signin")
    for box in page.locator("#scopes input").all():
        box.set_checked(box.get_attribute("value") in scopes)
    page.click("#mint")
    page.wait_for_selector('main[data-page="customers"]')
    return page


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
