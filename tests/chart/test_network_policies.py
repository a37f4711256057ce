"""NetworkPolicies: scoped to this release's pods, least privilege between components."""

from __future__ import annotations

from typing import Any

from .conftest import RELEASE, of_kind, pod_specs

CHART_LABELS = {"app.kubernetes.io/name": "zhongtai", "app.kubernetes.io/instance": RELEASE}


def _component_of(selector: dict[str, Any]) -> str:
    labels = selector["matchLabels"]
    assert CHART_LABELS.items() <= labels.items(), f"selector not scoped to the release: {labels}"
    assert "matchExpressions" not in selector
    return labels["app.kubernetes.io/component"]


def _policies(docs) -> dict[str, dict[str, Any]]:
    return {_component_of(np["spec"]["podSelector"]): np for np in of_kind(docs, "NetworkPolicy")}


def _chart_peers(rules: list[dict[str, Any]], key: str) -> dict[str, set[int]]:
    """component -> ports, for rule peers that are pod selectors of this release."""
    out: dict[str, set[int]] = {}
    for rule in rules:
        ports = {p["port"] for p in rule.get("ports", [])}
        for peer in rule.get(key, []):
            if "podSelector" in peer and "namespaceSelector" not in peer:
                out.setdefault(_component_of(peer["podSelector"]), set()).update(ports)
    return out


def test_policies_are_on_by_default_and_can_be_turned_off(render):
    assert of_kind(render("default-values"), "NetworkPolicy")
    assert not of_kind(render("default-values", set_values={"networkPolicy.enabled": False}), "NetworkPolicy")


def test_every_chart_pod_is_selected_by_exactly_one_policy(render):
    docs = render("hardened-values")
    policies = _policies(docs)
    for np in policies.values():
        assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    for label, _spec, pod_labels in pod_specs(docs):
        matching = [
            c for c, np in policies.items() if np["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        ]
        assert len(matching) == 1, f"{label} is selected by {matching}"


def test_ingress_least_privilege(render):
    policies = _policies(render("hardened-values"))
    allowed = {c: _chart_peers(np["spec"]["ingress"], "from") for c, np in policies.items()}
    assert allowed["customer"] == {
        "gateway": {50051},
        "product": {50051},
        "data-hub": {50051},  # a view miss asks whether the customer exists (ADR 0008)
        "helm-test": {50051},
    }
    assert allowed["product"] == {"gateway": {50052}, "helm-test": {50052}}
    assert allowed["data-hub"] == {"gateway": {50053}, "helm-test": {50053}}
    assert allowed["gateway"] == {"helm-test": {8080}}
    assert allowed["migrate"] == {} and allowed["helm-test"] == {}
    # Gateway: only from the ingress-controller namespace (hardened values) on 8080.
    gw_rules = policies["gateway"]["spec"]["ingress"]
    channel = [r for r in gw_rules if any("namespaceSelector" in p for p in r.get("from", []))]
    assert {p["port"] for r in channel for p in r["ports"]} <= {8080, 9464}
    assert any(
        p["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
        for r in channel
        for p in r["from"]
    )
    # No rule anywhere admits all sources, except what values ask for.
    for component, np in policies.items():
        for rule in np["spec"]["ingress"]:
            assert rule.get("from"), f"{component}: ingress rule open to the world"


def test_gateway_open_to_anywhere_when_no_peers_configured(render):
    docs = render("hardened-values", set_values={"networkPolicy.gateway.from": None})
    gw = _policies(docs)["gateway"]["spec"]["ingress"]
    assert {"ports": [{"port": 8080, "protocol": "TCP"}]} in gw


def test_egress_least_privilege(render):
    policies = _policies(render("hardened-values"))
    calls = {c: _chart_peers(np["spec"]["egress"], "to") for c, np in policies.items()}
    assert calls["gateway"] == {"customer": {50051}, "product": {50052}, "data-hub": {50053}}
    assert calls["product"] == {"customer": {50051}}
    assert calls["data-hub"] == {"customer": {50051}}
    assert calls["customer"] == {}
    assert calls["helm-test"] == {"customer": {50051}, "product": {50052}, "data-hub": {50053}, "gateway": {8080}}

    def external(component: str) -> dict[int, list]:
        out: dict[int, list] = {}
        for rule in policies[component]["spec"]["egress"]:
            if all("podSelector" in p and "namespaceSelector" not in p for p in rule.get("to", [{}])):
                continue  # chart pods, checked above
            for port in rule["ports"]:
                out.setdefault(port["port"], []).append((port["protocol"], rule.get("to")))
        return out

    dns_to = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    for component in ("customer", "product", "data-hub"):
        ext = external(component)
        assert sorted(ext) == [53, 4317, 5432, 9093], component
        assert sorted(proto for proto, _ in ext[53]) == ["TCP", "UDP"]
        assert all(to == dns_to for _, to in ext[53])
        assert ext[9093] == [("TCP", [{"ipBlock": {"cidr": "10.20.0.0/16"}}])]
        assert ext[5432] == [("TCP", [{"ipBlock": {"cidr": "10.30.0.0/24"}}])]
    # The gateway talks to no Kafka: to PostgreSQL (its Idempotency-Key records) and Redis (quotas).
    assert sorted(external("gateway")) == [53, 4317, 5432, 6379]
    assert ext[5432] == external("gateway")[5432]
    memory = {"config.gateway.idempotency.store": "memory", "config.gateway.quotas.store": "memory"}
    alone = _policies(render("hardened-values", set_values=memory))["gateway"]["spec"]["egress"]
    assert {p["port"] for rule in alone for p in rule["ports"]} == {53, 4317, 50051, 50052, 50053}
    # Migrations reach PostgreSQL and DNS only.
    assert sorted(external("migrate")) == [53, 5432]


def test_migration_policy_is_a_hook_created_before_the_jobs(render):
    docs = render("hardened-values")
    np = _policies(docs)["migrate"]
    hook_weight = int(np["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert np["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    for job in of_kind(docs, "Job"):
        assert int(job["metadata"]["annotations"]["helm.sh/hook-weight"]) > hook_weight


def test_strimzi_peers_from_values(render):
    policies = _policies(render("strimzi-values"))
    rules = [r for r in policies["data-hub"]["spec"]["egress"] if r["ports"][0]["port"] == 9092]
    assert rules[0]["to"][0]["podSelector"]["matchLabels"] == {"strimzi.io/cluster": "bank-kafka"}
    # No OTLP endpoint configured: no OTLP egress.
    assert not [r for r in policies["gateway"]["spec"]["egress"] if r["ports"][0]["port"] == 4317]


def test_policy_selectors_follow_the_release_name(render):
    docs = render("hardened-values", release="other")
    for np in of_kind(docs, "NetworkPolicy"):
        assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "other"
        for rule in np["spec"]["ingress"] + np["spec"]["egress"]:
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "other"
