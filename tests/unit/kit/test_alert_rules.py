"""The shipped alert rules name metrics the consumers really export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from opentelemetry.metrics import Counter

from services.kit import consumer, dlq, progress

RULES = Path(__file__).resolve().parents[3] / "infra" / "prometheus" / "zhongtai-alerts.yaml"


def _exported() -> set[str]:
    """The consumer's instruments as the OpenTelemetry Prometheus exporter names them."""
    names = set()
    for value in [*vars(consumer).values(), *vars(dlq).values(), *vars(progress).values()]:
        # (the module's instruments may still be the API's proxies, which keep ``_name``)
        name = getattr(value, "name", None) or getattr(value, "_name", None)
        if isinstance(name, str) and name.startswith("consumer."):
            names.add(name.replace(".", "_") + ("_total" if isinstance(value, Counter) else ""))
    # Observable gauges are registered with callbacks and not kept in the module.
    return names | {"consumer_lag", "consumer_consuming"}


def test_every_alert_expression_uses_exported_consumer_metrics() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {"ZhongtaiConsumerNotConsuming", "ZhongtaiConsumerLagGrowing",
                                           "ZhongtaiEventDeadLettered", "ZhongtaiConsumerGroupStalled"}  # fmt: skip
    exported = _exported()
    for rule in rules:
        used = set(re.findall(r"\bconsumer_[a-z_]+\b", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
