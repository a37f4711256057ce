"""Object names under the longest release name, and components switched off leaving nothing behind."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from devtools import chart

from .conftest import FULLNAME, Docs, by_name, of_kind, strings

# Helm's own limit on release names.
LONG_RELEASES = [
    "payments-platform-production-eu-west-1-blue-cluster-a",  # fullname = release + "-zhongtai"
    "bank-zhongtai-production-eu-west-1-blue-green-canary1",  # contains the chart name: fullname = release
]
# Everything on: HPA, PDB, headless Services, NetworkPolicies, Ingress, helm tests, topics.
ALL_ON = {"strimzi.topics.enabled": True, "strimzi.topics.cluster": "bank-kafka"}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kinds whose names must be DNS labels (<= 63): Services (DNS-1035), and objects whose name
# becomes a label value or a hostname (Jobs: job-name label; Pods: hostname) or that we keep
# short for their dependants (Deployments -> ReplicaSets/Pods, HPA/PDB/NetworkPolicy/KafkaTopic).
LABEL_NAMED_KINDS = {
    "Service",
    "Deployment",
    "Job",
    "Pod",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "KafkaTopic",
    "Ingress",
}
COMPONENTS = {"customer": "customer", "product": "product", "data_hub": "data-hub", "gateway": "gateway"}
TARGET_VARS = {"customer": "ZT_CUSTOMER_TARGET", "product": "ZT_PRODUCT_TARGET", "data_hub": "ZT_DATAHUB_TARGET"}
EXTERNAL_CUSTOMER = "customer.core-banking.svc.cluster.local:50051"


def label_maps(node: Any) -> Iterator[dict[str, Any]]:
    """Every labels / matchLabels map in an object (metadata, pod templates, selectors, peers)."""
    if isinstance(node, dict):
        for key, value in node.items():
            is_map = key in ("labels", "matchLabels", "selector") and isinstance(value, dict)
            if is_map and all(isinstance(v, str) for v in value.values()):
                yield value
            yield from label_maps(value)
    elif isinstance(node, list):
        for item in node:
            yield from label_maps(item)


def names(docs: Docs) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


# ---------------------------------------------------------------------- long names ----
@pytest.fixture(scope="module", params=LONG_RELEASES)
def long_render(request: pytest.FixtureRequest, render) -> tuple[str, Docs]:
    release = request.param
    assert len(release) == 53
    return release, render("hardened-values", set_values=ALL_ON, release=release)


def test_long_release_names_are_unique_and_short_enough(long_render):
    release, docs = long_render
    pairs = [(d["kind"], d["metadata"]["name"]) for d in docs]
    duplicates = sorted({p for p in pairs if pairs.count(p) > 1})
    assert not duplicates, f"{release}: duplicate objects {duplicates}"
    kinds = {kind for kind, _ in pairs}
    assert {"Deployment", "Service", "Job", "Pod", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert {"NetworkPolicy", "KafkaTopic", "Ingress", "ConfigMap", "ServiceAccount"} <= kinds
    for kind, name in pairs:
        assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), (kind, name)
        if kind in LABEL_NAMED_KINDS:
            assert len(name) <= 63 and DNS_LABEL.match(name), f"{kind}/{name} ({len(name)} chars)"
        if kind == "Service":
            assert DNS_1035_LABEL.match(name), name
    # The six topics stay six distinct objects (they used to collapse into one when truncated).
    assert len({n for k, n in pairs if k == "KafkaTopic"}) == 6


def test_long_release_labels_fit(long_render):
    _release, docs = long_render
    for doc in docs:
        for labels in label_maps(doc):
            for key, value in labels.items():
                assert len(value) <= 63, f"{doc['kind']}/{doc['metadata']['name']}: {key}={value}"
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert DNS_LABEL.match(c["name"]) and len(c["name"]) <= 63


def test_long_release_references_resolve(long_render):
    _release, docs = long_render
    have = names(docs)
    services = {n for k, n in have if k == "Service"}
    config = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))["data"]
    for var in TARGET_VARS.values():
        host = config[var].removeprefix("dns:///").split(".")[0]
        assert host in services, f"{var}={config[var]}"
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert ("Deployment", hpa["spec"]["scaleTargetRef"]["name"]) in have
    for pod in of_kind(docs, "Pod"):
        target = pod["spec"]["containers"][0]["args"][1]
        assert target.removeprefix("http://").split(".")[0] in services, target
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] in services
    for dep in of_kind(docs, "Deployment"):
        spec = dep["spec"]["template"]["spec"]
        assert ("ServiceAccount", spec["serviceAccountName"]) in have
        for source in spec["containers"][0]["envFrom"]:
            assert ("ConfigMap", source["configMapRef"]["name"]) in have
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in have


def test_long_release_renders_strictly_valid(long_render):
    _release, docs = long_render
    validated, custom, errors = chart.validate_docs(docs, "1.29.0")
    assert not errors
    assert validated > 30 and custom == 6  # (the KafkaTopics)


# ------------------------------------------------------------------------- toggles ----
def _toggle_values(component: str) -> dict[str, Any]:
    values: dict[str, Any] = {**ALL_ON, f"components.{component}.enabled": False}
    if component == "gateway":
        values["ingress.enabled"] = False  # the Ingress routes to the gateway (refused otherwise)
    if component == "customer":
        values["config.serviceTargets.customer"] = EXTERNAL_CUSTOMER  # product needs a customer service
    return values


def _belongs(doc: dict[str, Any], cname: str) -> bool:
    name = doc["metadata"]["name"]
    own_names = {f"{FULLNAME}-{p}{cname}{s}" for p in ("", "migrate-", "test-") for s in ("", "-headless")}
    return name in own_names or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == cname


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_turning_a_component_off_removes_all_its_objects(render, component):
    cname = COMPONENTS[component]
    full = render("hardened-values", set_values=ALL_ON)
    off = render("hardened-values", set_values=_toggle_values(component))
    own = {(d["kind"], d["metadata"]["name"]) for d in full if _belongs(d, cname)}
    kinds = {kind for kind, _ in own}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Pod"}
    assert expected <= kinds, f"the full render lacks some of {cname}'s objects: {kinds}"
    if component != "gateway":
        assert {"Job"} <= kinds and (("Service", f"{FULLNAME}-{cname}-headless") in own)
    if component == "gateway":
        assert "Ingress" in kinds
    removed = names(full) - names(off)
    assert removed == own, f"removed {sorted(removed - own)}, left {sorted(own - removed)}"
    assert names(off) <= names(full)
    for doc in off:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        # No selector, peer or label left pointing at the component's pods ...
        for labels in label_maps(doc):
            assert labels.get("app.kubernetes.io/component") != cname, where
        # ... and no address of its Services (ConfigMap targets, helm test pods).
        for text in strings(doc):
            assert f"{FULLNAME}-{cname}." not in text and f"{FULLNAME}-{cname}-headless" not in text, (where, text)
    config = by_name(off, "ConfigMap", f"{FULLNAME}-config")["data"]
    if component == "customer":
        assert config["ZT_CUSTOMER_TARGET"] == EXTERNAL_CUSTOMER
    elif component in TARGET_VARS:
        assert TARGET_VARS[component] not in config


@pytest.mark.parametrize(
    ("off", "left"),
    [
        # the data hub still asks the customer service on a view miss (ADR 0008)
        (["product"], {"gateway", "data-hub", "helm-test"}),
        (["data_hub"], {"gateway", "product", "helm-test"}),
        (["product", "data_hub"], {"gateway", "helm-test"}),
    ],
)
def test_a_caller_turned_off_loses_the_customer_port(render, off, left):
    values = {**ALL_ON, **{f"components.{c}.enabled": False for c in off}}
    docs = render("hardened-values", set_values=values)
    policy = by_name(docs, "NetworkPolicy", f"{FULLNAME}-customer")
    callers = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "podSelector" in peer
    }
    assert callers == left


def test_no_callers_means_no_open_ingress(render):
    """Without gateway, product and test pods the services accept nobody - never everybody."""
    docs = render(
        "hardened-values",
        set_values={
            "components.gateway.enabled": False,
            "components.product.enabled": False,
            "ingress.enabled": False,
            "tests.enabled": False,
        },
    )
    for component in ("customer", "data-hub"):
        policy = by_name(docs, "NetworkPolicy", f"{FULLNAME}-{component}")
        for rule in policy["spec"].get("ingress") or []:
            assert rule.get("from"), f"{component}: an ingress rule without peers admits any source: {rule}"
    _, _, errors = chart.validate_docs(docs, "1.29.0")
    assert not errors
