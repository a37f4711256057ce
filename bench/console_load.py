"""Benchmark: how long the staff console's pages take to load on the local stack (not a test).

Starts Kafka + PostgreSQL (devtools.stack; ZT_TEST_KAFKA_BOOTSTRAP / ZT_TEST_POSTGRES_URL when
set), the three services and the gateway as processes (tests/support/platform.py), seeds demo
customers through the APIs, then opens each page ``--runs`` times in Debian's chromium (Playwright,
a fresh browser context each time: cold cache) and prints per page the median and worst of

- ``load``: the navigation's load event (HTML, CSS, the scripts incl. ECharts), from navigationStart;
- ``data``: until the page shows its data (its table or chart filled from the API), from navigationStart.

    .venv/bin/python bench/console_load.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from playwright.sync_api import sync_playwright  # noqa: E402

from devtools import stack  # noqa: E402
from devtools.synth import seed_via_grpc  # noqa: E402
from services.cli import DEV_SECRET  # noqa: E402
from services.kit.auth import ALL_SCOPES, mint_token  # noqa: E402
from tests.e2e.console.conftest import chromium_path  # noqa: E402
from tests.support.platform import running_platform  # noqa: E402

#: page route → the selector that shows its data has arrived.
PAGES = {"customers": "#customer-list", "segments": "#segments-chart canvas", "churn": "#watch-table, .muted",
         "ops": "#ops-lag"}  # fmt: skip
_SHOWN = "performance.now()"


def measure(url: str, token: str, runs: int) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in PAGES}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        for _ in range(runs):
            for name, selector in PAGES.items():
                context = browser.new_context()
                context.add_init_script(f"sessionStorage.setItem('zt.token', {token!r})")
                page = context.new_page()
                page.goto(f"{url}/console/#/{name}", wait_until="load")
                page.wait_for_selector(selector)
                shown = page.evaluate(_SHOWN)
                load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                out[name].append((load, shown))
                context.close()
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
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
            results = measure(platform.url, token, args.runs)
    finally:
        kafka.stop()
        pg.stop()
    print(f"console page load, {args.runs} cold loads per page, load average {os.getloadavg()[0]:.1f}")
    print(f"{'page':<10} {'load p50':>9} {'load max':>9} {'data p50':>9} {'data max':>9}   (ms from navigationStart)")
    for name, samples in results.items():
        loads, shown = [s[0] for s in samples], [s[1] for s in samples]
        print(f"{name:<10} {statistics.median(loads):9.0f} {max(loads):9.0f} {statistics.median(shown):9.0f} "
              f"{max(shown):9.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
