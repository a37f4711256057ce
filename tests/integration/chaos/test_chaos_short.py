"""The short chaos run of `make test` (the full one is `make chaos`, docs/RESILIENCE.md): real
PostgreSQL (fsync on), Kafka, Redis, toxiproxy, two replicas of every component, a channel
workload through both gateways, and three faults one at a time — a product replica frozen
(SIGSTOP) so that writes hang on it, then SIGKILLed with them in flight, a gateway replica
SIGKILLed, an immediate PostgreSQL restart. After each: nothing failed for good, no HTTP 500,
every acknowledged write exactly once, balances add up, `zhongtai reconcile` is clean, and (the
first) at least one write was in flight at the kill and was acknowledged after it."""

from __future__ import annotations

import pytest

from devtools import chaos

pytestmark = pytest.mark.timeout(600)


async def test_short_chaos_run_loses_nothing() -> None:
    results = await chaos.run(list(chaos.SHORT), load_s=8.0)
    report = "\n".join(line for result in results for line in result.lines())
    print(report)
    assert [r.name for r in results] == list(chaos.SHORT)
    for result in results:
        assert result.stats.requests > 50, report  # the workload really ran through the fault
        assert result.stats.statuses.get("500", 0) == 0, report
        assert not result.stats.failed_for_good, report
        assert not result.violations, report
        assert not result.reconcile, report
        assert result.met, report  # (kill-product-write-in-flight: writes were in flight, all acknowledged)
