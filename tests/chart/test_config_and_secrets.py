"""Configuration (ConfigMap of ZT_ variables, checksums) and credentials (Secrets only)."""

from __future__ import annotations

import re

import pytest

from devtools import chart

from .conftest import FULLNAME, by_name, containers, deployment, env_of, of_kind, pod_specs

CONVENTIONS = chart.REPO_ROOT / "docs" / "conventions.md"
SECRET_VARS = {
    "ZT_DATABASE_URL",
    "ZT_AUTH_HS256_SECRET",
    "ZT_PII_KEY",
    "ZT_PII_KEY_ID",
    "ZT_PII_OLD_KEYS",
    "ZT_BLIND_INDEX_KEY",
}
# Per pod, or read by one component only: container env, not the shared ConfigMap.
PER_POD_VARS = {"ZT_GRPC_PORT", "ZT_HTTP_PORT", "ZT_HTTP_HOST"}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - in a pod the servers must listen beyond loopback


def documented_variables() -> set[str]:
    """Every environment variable named in the configuration table of docs/conventions.md."""
    text = CONVENTIONS.read_text()
    section = text.split("## Configuration", 1)[1]
    names = set()
    for line in section.splitlines():
        if line.startswith("|"):
            names.update(re.findall(r"`((?:ZT|OTEL)_[A-Z0-9_]+)`", line.split("|")[1]))
    return names


def test_every_documented_variable_is_set_by_the_chart(render):
    documented = documented_variables()
    assert {"ZT_KAFKA_BOOTSTRAP_SERVERS", "ZT_CUSTOMER_TARGET", "OTEL_EXPORTER_OTLP_ENDPOINT"} <= documented
    seen: set[str] = set()
    for ci in ("default-values", "hardened-values"):
        docs = render(ci)
        seen |= set(by_name(docs, "ConfigMap", f"{FULLNAME}-config")["data"])
        for dep in of_kind(docs, "Deployment"):
            seen |= set(env_of(dep["spec"]["template"]["spec"]["containers"][0]))
    assert documented - seen == set()


def test_config_values_are_strings_and_no_secret_in_the_configmap(render, ci_name):
    docs = render(ci_name)
    data = by_name(docs, "ConfigMap", f"{FULLNAME}-config")["data"]
    assert all(isinstance(v, str) for v in data.values())
    assert not SECRET_VARS & set(data)
    assert not PER_POD_VARS & set(data)
    assert data["ZT_GRPC_HOST"] == ALL_INTERFACES
    assert data["ZT_METRICS_PORT"] == "9464"
    for dep in of_kind(docs, "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["envFrom"] == [{"configMapRef": {"name": f"{FULLNAME}-config"}}]
    gateway_env = env_of(deployment(docs, "gateway")["spec"]["template"]["spec"]["containers"][0])
    assert gateway_env["ZT_HTTP_HOST"] == ALL_INTERFACES


def test_credentials_only_from_secret_references(render, ci_name):
    for label, spec, _ in pod_specs(render(ci_name)):
        for c in containers(spec):
            for name, value in env_of(c).items():
                if name in SECRET_VARS:
                    assert isinstance(value, dict) and "secretKeyRef" in value, f"{label}: {name} inline"
                elif isinstance(value, str):
                    assert not re.search(r"://[^/\s]+:[^@/\s]+@", value), f"{label}: {name} holds credentials"


def test_hardened_uses_the_existing_secret_and_renders_none(render):
    docs = render("hardened-values")
    assert not of_kind(docs, "Secret")
    keys: dict[str, set[str]] = {}
    for dep in of_kind(docs, "Deployment"):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        env = env_of(dep["spec"]["template"]["spec"]["containers"][0])
        refs = {n: v["secretKeyRef"] for n, v in env.items() if isinstance(v, dict) and "secretKeyRef" in v}
        assert {r["name"] for r in refs.values()} <= {"zhongtai-credentials"}
        keys[component] = {r["key"] for r in refs.values()}
        # RS256: the JWKS is mounted and no HS256 secret is handed out.
        assert "ZT_AUTH_HS256_SECRET" not in env
    assert keys == {
        "customer": {"customer-database-url", "pii-key", "pii-key-id", "pii-old-keys", "blind-index-key"},
        "product": {"product-database-url"},
        "data-hub": {"data-hub-database-url", "data-hub-audit-key"},
        # shared Idempotency-Key records (ADR 0022) and quota buckets (ADR 0023)
        "gateway": {"gateway-database-url", "quota-redis-url"},
    }
    config = by_name(docs, "ConfigMap", f"{FULLNAME}-config")["data"]
    assert config["ZT_ENVIRONMENT"] == "prod"
    jwks_path = config["ZT_AUTH_JWKS_FILE"]
    spec = deployment(docs, "gateway")["spec"]["template"]["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "jwks")
    assert jwks_path.startswith(mount["mountPath"] + "/")
    assert by_name(docs, "ConfigMap", f"{FULLNAME}-jwks")["data"]["jwks.json"].startswith('{"keys"')


def test_existing_jwks_configmap(render):
    docs = render(
        "hardened-values",
        set_values={"config.auth.jwks.inline": "", "config.auth.jwks.existingConfigMap": "bank-jwks"},
    )
    spec = deployment(docs, "customer")["spec"]["template"]["spec"]
    assert next(v for v in spec["volumes"] if v["name"] == "jwks")["configMap"]["name"] == "bank-jwks"
    assert not [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-jwks")]


def test_dev_secret_is_a_hook_for_the_migrations(render):
    docs = render("default-values")
    (secret,) = of_kind(docs, "Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-dev"
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert set(secret["stringData"]) == {
        "customer-database-url",
        "product-database-url",
        "data-hub-database-url",
        "gateway-database-url",
        "quota-redis-url",
        "auth-hs256-secret",
        "pii-key",
        "pii-key-id",
        "blind-index-key",
        "data-hub-audit-key",
    }
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < min(
        int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in of_kind(docs, "Job")
    )
    env = env_of(deployment(docs, "gateway")["spec"]["template"]["spec"]["containers"][0])
    assert env["ZT_AUTH_HS256_SECRET"]["secretKeyRef"] == {"name": f"{FULLNAME}-dev", "key": "auth-hs256-secret"}


@pytest.mark.parametrize(
    ("ci", "set_values", "message"),
    [
        ("hardened-values", {"devSecrets.enabled": True}, "refused with environment=prod"),
        ("default-values", {"environment": "prod"}, "refused with environment=prod"),
        ("default-values", {"devSecrets.enabled": False}, "no credentials source"),
        ("default-values", {"secrets.existingSecret": "x"}, "not both"),
        ("strimzi-values", {"environment": "prod"}, "refuses config.auth.mode=hs256"),
        ("strimzi-values", {"config.auth.mode": "rs256"}, "needs config.auth.jwks"),
        ("default-values", {"devSecrets.authHs256Secret": "short"}, "authHs256Secret"),
        ("default-values", {"image.tag": "latest"}, "image/tag"),
        ("default-values", {"surprise": 1}, "additional properties 'surprise' not allowed"),
        ("default-values", {"components.gateway.extra": 1}, "additional properties 'extra' not allowed"),
        ("default-values", {"containerSecurityContext.allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
        ("default-values", {"podSecurityContext.runAsUser": 0}, "runAsUser"),
    ],
)
def test_unsafe_values_fail_to_render(render_error, ci, set_values, message):
    assert message in render_error(ci, set_values=set_values)


def test_no_values_at_all_fails_with_the_fix(helm):
    proc = chart.run_helm(chart.template_args(), helm=helm)
    assert proc.returncode != 0
    assert "secrets.existingSecret" in proc.stderr and "customer-database-url" in proc.stderr


def _checksums(docs) -> dict[str, dict[str, str]]:
    return {
        d["metadata"]["name"]: {
            k: v for k, v in d["spec"]["template"]["metadata"]["annotations"].items() if k.startswith("checksum/")
        }
        for d in of_kind(docs, "Deployment")
    }


def test_config_checksum_rolls_pods_only_when_config_changes(render):
    base = _checksums(render("default-values"))
    assert all(c["checksum/config"] for c in base.values())
    changed = _checksums(render("default-values", set_values={"config.logLevel": "DEBUG"}))
    targets = _checksums(render("default-values", set_values={"headlessServices.enabled": False}))
    unrelated = _checksums(render("default-values", set_values={"components.customer.replicas": 5}))
    for name in base:
        assert changed[name]["checksum/config"] != base[name]["checksum/config"]
        assert targets[name]["checksum/config"] != base[name]["checksum/config"]
        assert unrelated[name] == base[name]
    secret_changed = _checksums(render("default-values", set_values={"devSecrets.piiKey": "b3RoZXIta2V5"}))
    assert all(secret_changed[n]["checksum/dev-secrets"] != base[n]["checksum/dev-secrets"] for n in base)
