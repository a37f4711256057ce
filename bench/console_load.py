"""Benchmark: how long the staff console's pages take to load on the local stack (not a test).

Starts Kafka + PostgreSQL (devtools.stack; ZT_TEST_KAFKA_BOOTSTRAP / ZT_TEST_POSTGRES_URL when
set), the three services and the gateway as processes (tests/support/platform.py), seeds demo
customers through the APIs, then opens each page ``--runs`` times in Debian's chromium (Playwright,
a fresh browser context each time: cold cache) and prints per page the median and worst of

- ``load``: the navigation's load event (HTML, CSS, the scripts incl. ECharts), from navigationStart;
- ``data``: until the page shows all its data (every table and chart filled from the API), from
  navigationStart. Pages: the customer list, a demo customer's 360° view (holdings, activity
  chart, event feed, transactions), segments (chart + members), churn watch-list, operations
  (pipeline status, every service's outbox, dead letters).

    .venv/bin/python bench/console_load.py [--runs 7] [--baseline <other checkout>/gateway/static/console]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

import httpx  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from devtools import stack  # noqa: E402
from devtools.synth import seed_via_grpc  # noqa: E402
from services.cli import DEV_SECRET  # noqa: E402
from services.kit.auth import ALL_SCOPES, mint_token  # noqa: E402
from tests.e2e.console.conftest import chromium_path  # noqa: E402
from tests.support.platform import Platform, running_platform  # noqa: E402
from tests.support.procs import ServiceProcess  # noqa: E402

#: page → (route, the elements that show its data has arrived: every one of them).
PAGES = {
    "customers": ("customers", ["#customer-list"]),
    "360-view": (
        "customers/{holder}",
        ["#holdings-table", "#activity-chart canvas", "#events-table", "#transactions-table"],
    ),
    "segments": ("segments", ["#segments-chart canvas", "#members-table"]),
    "churn": ("churn", ["#watch-table, .muted"]),
    "ops": ("ops", ["#ops-lag", "#outbox-table", "#dead-letter-table, #dead-letters .muted"]),
}
#: The frame in which every selector matches (polled each animation frame: a frame's accuracy).
_SHOWN = "sels => sels.every((s) => document.querySelector(s)) && performance.now()"


def holder(url: str, token: str) -> str:
    """A seeded customer whose view has holdings (the 360° page then shows every card)."""
    headers = {"authorization": f"Bearer {token}"}
    for customer in httpx.get(f"{url}/v1/customers", params={"pageSize": 50}, headers=headers).json()["customers"]:
        view = httpx.get(f"{url}/v1/customers/{customer['customerId']}/view", headers=headers)
        if view.status_code == 200 and view.json()["holdings"]:
            return str(customer["customerId"])
    raise SystemExit("no seeded customer with holdings")


def measure(token: str, runs: int, variants: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    """(load event, data shown) per "page/variant" (variant → its gateway's URL); the variants
    alternate within each run."""
    out: dict[str, list[tuple[float, float]]] = {f"{n}/{v}": [] for n in PAGES for v in variants}
    someone = holder(next(iter(variants.values())), token)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        for run in range(runs):
            for name, (route, selectors) in PAGES.items():
                order = list(variants.items())
                for variant, url in order if run % 2 == 0 else order[::-1]:
                    context = browser.new_context()
                    context.add_init_script(f"sessionStorage.setItem('zt.token', {token!r})")
                    page = context.new_page()
                    page.goto(f"{url}/console/#/{route.format(holder=someone)}", wait_until="load")
                    shown = page.wait_for_function(_SHOWN, arg=selectors, polling="raf", timeout=30_000).json_value()
                    load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                    out[f"{name}/{variant}"].append((load, shown))
                    context.close()
        browser.close()
    return out


@contextlib.contextmanager
def second_gateway(platform: Platform, console_dir: Path | None, logs: Path) -> Iterator[str | None]:
    """Another gateway on the same services serving ``console_dir`` (its URL), or None."""
    if console_dir is None:
        yield None
        return
    env = {k: v for k, v in platform.gateway.env.items() if k.startswith("ZT_") and k != "ZT_HTTP_PORT"}
    proc = ServiceProcess("gateway", env={**env, "ZT_CONSOLE_DIR": str(console_dir.resolve())}, log_dir=logs)
    proc.start(60)
    try:
        yield f"http://{proc.target}"
    finally:
        proc.stop(15)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--baseline", type=Path, help="a built console directory (gateway/static/console of another checkout) to "
        "compare with: a second gateway on the same services serves it (ZT_CONSOLE_DIR), loads interleaved"
    )  # fmt: skip
    args = parser.parse_args()
    kafka, pg = stack.kafka_for_tests(), stack.postgres_for_tests()
    kafka.start()
    pg.start()
    token = mint_token(DEV_SECRET, ALL_SCOPES, client_id="bench-console")
    logs = Path(tempfile.mkdtemp(prefix="zt-console-"))
    try:
        with running_platform(kafka, pg, logs, common={"ZT_LOG_LEVEL": "WARNING"}) as platform:
            procs = platform.processes
            asyncio.run(seed_via_grpc(procs["customer"].target, procs["product"].target, token, customers=30))
            with second_gateway(platform, args.baseline, logs) as baseline:
                variants = {"before": baseline, "after": platform.url} if baseline else {"gateway": platform.url}
                results = measure(token, args.runs, variants)
    finally:
        kafka.stop()
        pg.stop()
    print(f"console page load, {args.runs} cold loads per page, load average {os.getloadavg()[0]:.1f}")
    print(f"{'page':<18} {'load p50':>9} {'load max':>9} {'data p50':>9} {'data max':>9}   (ms from navigationStart)")
    for name, samples in results.items():
        loads, shown = [s[0] for s in samples], [s[1] for s in samples]
        print(f"{name:<18} {statistics.median(loads):9.0f} {max(loads):9.0f} {statistics.median(shown):9.0f} "
              f"{max(shown):9.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
