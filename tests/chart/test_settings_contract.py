"""The chart's env against the settings classes the processes really load.

For every workload (Deployments and migration Jobs) of every ci values file:
- every variable the chart sets is a field of that component's settings class (no typos, no
  dead config), or one of the few non-settings variables allowed below;
- every required field (no default) is set, and the settings class actually validates with
  the rendered env (this catches rules only enforced by validators, e.g. prod needs the PII
  keys, the JWKS file and the product's service token file);
- credentials (SecretStr fields and database URLs) only come from secretKeyRefs;
- the chart's defaults for component-only settings equal the code's defaults.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.customer.config import CustomerSettings
from services.data_hub.main import DataHubSettings
from services.kit.config import ServiceSettings
from services.product.main import ProductSettings

from .conftest import Docs, by_name, of_kind

# The settings class each process loads: Deployments by component label, Jobs by `migrate <c>`.
SETTINGS: dict[str, type[ServiceSettings]] = {
    "customer": CustomerSettings,
    "product": ProductSettings,
    "data-hub": DataHubSettings,
    "gateway": GatewaySettings,
}

# Variables the chart sets that no settings class reads, each with who reads it. Anything
# else without a settings field is a typo or dead config.
NON_SETTINGS_ENV = {
    # Python and libraries that want a writable home: /tmp is the only writable directory.
    "HOME",
    # services/kit/telemetry.py switches the OTLP exporters on with it; the OTel exporters read it.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    # The OpenTelemetry SDK's resource detector (deployment.environment on every span).
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    # Head sampling: the SDK's TracerProvider reads them (config.otel.sampler / samplerArg).
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
}

# str-typed fields that carry credentials (SecretStr fields are found by type).
CREDENTIAL_STR_FIELDS = {"database_url", "quota_redis_url"}

# Values for keys of a Secret the chart does not render (secrets.existingSecret): shaped as
# a platform team would store them (random, non-dev keys).
_KEY = base64.b64encode(os.urandom(32)).decode()
EXISTING_SECRET_DATA = {
    "customer-database-url": "postgresql+asyncpg://customer:pw@pg.db.svc:5432/customer",
    "product-database-url": "postgresql+asyncpg://product:pw@pg.db.svc:5432/product",
    "data-hub-database-url": "postgresql+asyncpg://data_hub:pw@pg.db.svc:5432/data_hub",
    "gateway-database-url": "postgresql+asyncpg://gateway:pw@pg.db.svc:5432/gateway",
    "quota-redis-url": "redis://:pw@redis.db.svc:6379/0",
    "pii-key": _KEY,
    "pii-key-id": "2026-01",
    "pii-old-keys": "2025-01:" + base64.b64encode(os.urandom(32)).decode(),
    "blind-index-key": base64.b64encode(os.urandom(32)).decode(),
    "data-hub-audit-key": base64.b64encode(os.urandom(32)).decode(),
    "auth-hs256-secret": "x" * 40,
}

# Component-only fields the chart sets deliberately away from the code's default.
# (datahub_group_instance_id: the pod name, per replica, with staticMembership: true (off by default,
# ADR 0046); the code default is "no static membership";
# idempotency_store: shared by every gateway replica in the chart, per process in the code, ADR 0022;
# datahub_model_path: the artifact baked into the image, the code default is "the rules", ADR 0020)
DELIBERATE_OVERRIDES = {
    "http_host",
    "http_port",
    "service_token_file",
    "datahub_group_instance_id",
    "idempotency_store",
    "datahub_model_path",
}


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name -> field name, as pydantic-settings resolves them."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            candidates = [alias]  # an alias replaces prefix + name
        elif isinstance(alias, AliasChoices):
            candidates = [c if isinstance(c, str) else str(c.path[0]) for c in alias.choices]
        elif isinstance(alias, AliasPath):
            candidates = [str(alias.path[0])]
        else:
            candidates = [prefix + field_name]
        for candidate in candidates:
            names[candidate.upper()] = field_name
    return names


def is_credential(cls: type[BaseSettings], field_name: str) -> bool:
    return field_name in CREDENTIAL_STR_FIELDS or "SecretStr" in repr(cls.model_fields[field_name].annotation)


def workloads(docs: Docs) -> Iterator[tuple[str, type[ServiceSettings], dict[str, Any], dict[str, Any]]]:
    """(label, settings class, pod spec, main container) of every process the chart runs."""
    for dep in of_kind(docs, "Deployment"):
        component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        spec = dep["spec"]["template"]["spec"]
        yield f"Deployment/{dep['metadata']['name']}", SETTINGS[component], spec, spec["containers"][0]
    for job in of_kind(docs, "Job"):
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        command, component = container["args"]
        assert command == "migrate"
        yield f"Job/{job['metadata']['name']}", SETTINGS[component.replace("_", "-")], spec, container


def resolved_env(docs: Docs, container: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """The container's environment as the kubelet builds it, and the names that came from Secrets."""
    env: dict[str, str] = {}
    from_secret: set[str] = set()
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in of_kind(docs, "Secret")}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source
        env.update(by_name(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        field_ref = item["valueFrom"].get("fieldRef")
        if field_ref is not None:  # the downward API: what the kubelet would put there
            assert field_ref == {"fieldPath": "metadata.name"}, item
            env[item["name"]] = "zt-zhongtai-data-hub-7c9f8d5b4-x2k9p"
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        data = secrets.get(ref["name"], EXISTING_SECRET_DATA)
        if ref["key"] not in data:
            assert ref.get("optional"), f"{item['name']}: key {ref['key']} missing from Secret {ref['name']}"
            continue
        env[item["name"]] = data[ref["key"]]
        from_secret.add(item["name"])
    return env, from_secret


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch):
    """load(cls, env) -> cls() built from exactly that environment."""

    def _load(cls: type[ServiceSettings], env: dict[str, str]) -> ServiceSettings:
        for name in list(os.environ):
            if name.startswith(("ZT_", "OTEL_")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return cls()

    return _load


def test_the_mapping_covers_every_component(render):
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"] for d in of_kind(render("default-values"), "Deployment")
    }
    assert components == set(SETTINGS)
    assert env_names(ProductSettings)["ZT_CUSTOMER_DEADLINE_S"] == "customer_deadline_s"
    assert env_names(CustomerSettings)["ZT_PII_KEY_ID"] == "pii_key_id"


def test_every_variable_is_a_settings_field_and_every_required_field_is_set(render, ci_name):
    for label, cls, _spec, container in workloads(render(ci_name)):
        env, _ = resolved_env(render(ci_name), container)
        names = env_names(cls)
        unknown = sorted(n for n in env if n not in names and n not in NON_SETTINGS_ENV)
        assert not unknown, f"{label}: {unknown} are not fields of {cls.__name__} (typo or dead config)"
        required = sorted(n for n, f in names.items() if cls.model_fields[f].is_required())
        assert not [n for n in required if n not in env], f"{label}: required settings unset"


def test_each_process_validates_its_settings_from_the_rendered_env(render, ci_name, load):
    docs = render(ci_name)
    seen = set()
    for label, cls, _spec, container in workloads(docs):
        env, _ = resolved_env(docs, container)
        settings = load(cls, env)  # raises ValidationError with the offending variable named
        assert settings.environment == env["ZT_ENVIRONMENT"], label
        seen.add(cls)
    assert seen == set(SETTINGS.values())


def test_credentials_only_from_secrets(render, ci_name):
    docs = render(ci_name)
    for label, cls, _spec, container in workloads(docs):
        env, from_secret = resolved_env(docs, container)
        names = env_names(cls)
        for name in env:
            if name in names and is_credential(cls, names[name]):
                assert name in from_secret, f"{label}: {name} must come from a secretKeyRef"


def test_customer_pii_keys_come_from_the_secret(render, ci_name):
    docs = render(ci_name)
    for label, cls, _spec, container in workloads(docs):
        if cls is CustomerSettings:
            _, from_secret = resolved_env(docs, container)
            assert {"ZT_PII_KEY", "ZT_PII_KEY_ID", "ZT_BLIND_INDEX_KEY"} <= from_secret, label
            old = next(e for e in container["env"] if e["name"] == "ZT_PII_OLD_KEYS")
            assert old["valueFrom"]["secretKeyRef"]["optional"] is True, label


def test_file_settings_point_into_mounted_volumes(render, ci_name):
    docs = render(ci_name)
    for dep in of_kind(docs, "Deployment"):
        container = dep["spec"]["template"]["spec"]["containers"][0]
        env, _ = resolved_env(docs, container)
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for name in ("ZT_AUTH_JWKS_FILE", "ZT_SERVICE_TOKEN_FILE"):
            if name in env:
                path = Path(env[name])
                assert any(path.parent == Path(m) for m in mounts), f"{dep['metadata']['name']}: {name}={path}"


def test_prod_product_needs_a_service_token_volume(render, render_error):
    docs = render("hardened-values")
    spec = by_name(docs, "Deployment", "zt-zhongtai-product")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "service-token")
    assert volume["secret"] == {"secretName": "zhongtai-product-token"}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "service-token")
    assert mount["readOnly"] is True and "subPath" not in mount  # updates must reach the pod
    err = render_error("hardened-values", set_values={"config.product.serviceToken.volume": None})
    assert "config.product.serviceToken.volume" in err


def test_prod_data_hub_needs_its_own_service_token_volume(render, render_error):
    docs = render("hardened-values")
    spec = by_name(docs, "Deployment", "zt-zhongtai-data-hub")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "service-token")
    assert volume["secret"] == {"secretName": "zhongtai-data-hub-token"}
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["ZT_SERVICE_CLIENT_ID"] == "zhongtai-data-hub"
    assert env["ZT_SERVICE_TOKEN_FILE"] == "/var/run/zhongtai/service-token/token"
    err = render_error("hardened-values", set_values={"config.data_hub.serviceToken.volume": None})
    assert "config.data_hub.serviceToken.volume" in err


def test_the_data_hub_needs_a_customer_service_to_ask(render_error):
    err = render_error(
        "default-values", set_values={"components.customer.enabled": False, "components.product.enabled": False}
    )
    assert "components.data_hub asks the customer service" in err


def test_chart_defaults_equal_the_code_defaults(render, load):
    """Component-only settings: the chart renders them explicitly, with the code's values."""
    docs = render("default-values")
    shared = set(ServiceSettings.model_fields)
    checked = set()
    for label, cls, _spec, container in workloads(docs):
        if not label.startswith("Deployment/"):
            continue
        env, from_secret = resolved_env(docs, container)
        settings = load(cls, env)
        names = env_names(cls)
        for name in env:
            field = names.get(name)
            if field is None or field in shared or field in DELIBERATE_OVERRIDES or name in from_secret:
                continue
            default = cls.model_fields[field].get_default(call_default_factory=True)
            value = getattr(settings, field)
            assert value == default, f"{label}: {name}={env[name]!r} differs from the code default {default!r}"
            checked.add(name)
    assert {
        "ZT_CUSTOMER_DEADLINE_S",
        "ZT_DATAHUB_CUSTOMER_DEADLINE_S",
        "ZT_MAX_BODY_BYTES",
        "ZT_QUOTA_READS_RPS",
        "ZT_BUSINESS_TIMEZONE",
    } <= checked


def test_values_reach_the_settings(render, load):
    docs = render(
        "default-values",
        set_values={
            "config.gateway.maxBodyBytes": 8388608,
            "config.gateway.quotas.readsRps": 12.5,
            "config.product.customerDeadlineSeconds": 0.75,
            "config.data_hub.refreshIntervalSeconds": 86400,
            "config.data_hub.customerDeadlineSeconds": 1.5,
            "config.database.poolSize": 25,
            "config.gateway.corsOrigins": ["https://a.example", "https://b.example"],
        },
    )
    wanted = {
        GatewaySettings: {
            "max_body_bytes": 8388608,
            "quota_reads_rps": 12.5,
            "cors_origins": ["https://a.example", "https://b.example"],
        },
        ProductSettings: {"customer_deadline_s": 0.75, "database_pool_size": 25},
        DataHubSettings: {"datahub_refresh_interval_s": 86400.0, "datahub_customer_deadline_s": 1.5},
    }
    for label, cls, _spec, container in workloads(docs):
        if label.startswith("Deployment/") and cls in wanted:
            settings = load(cls, resolved_env(docs, container)[0])
            assert {k: getattr(settings, k) for k in wanted[cls]} == wanted[cls], label


@pytest.mark.parametrize(
    ("ci", "set_args", "message"),
    [
        ("default-values", "config.gateway.defaultTimeoutSeconds=40", "defaultTimeoutSeconds must not exceed"),
        ("hardened-values", "config.gateway.corsOrigins={*}", 'refuses config.gateway.corsOrigins "*"'),
        ("default-values", "config.gateway.corsOrigins={portal.example}", "corsOrigins"),
        ("default-values", "config.gateway.maxBodyBytes=10", "maxBodyBytes"),
        ("default-values", "config.product.serviceTokenTtlSeconds=5", "serviceTokenTtlSeconds"),
        ("default-values", "config.customer.businessTimezone=Asia Shanghai", "businessTimezone"),
    ],
)
def test_bad_service_settings_fail_to_render(render_error, ci, set_args, message):
    assert message in render_error(ci, extra=["--set", set_args])
