"""Workloads of the chart: restricted security, resources, probes, ports, scaling, shutdown."""

from __future__ import annotations

import re

import pytest
import yaml

from devtools import chart

from .conftest import FULLNAME, by_name, containers, deployment, env_of, of_kind, pod_specs

GRPC_PORTS = {"customer": 50051, "product": 50052, "data-hub": 50053}
METRICS_PORT = 9464
COMPONENTS = ["customer", "product", "data-hub", "gateway"]


def test_every_ci_file_renders_the_four_components(render, ci_name):
    docs = render(ci_name)
    assert sorted(d["metadata"]["name"] for d in of_kind(docs, "Deployment")) == sorted(
        f"{FULLNAME}-{c}" for c in COMPONENTS
    )
    for component in COMPONENTS:
        by_name(docs, "Service", f"{FULLNAME}-{component}")


def test_every_container_has_resources_and_restricted_security(render, ci_name):
    workloads = pod_specs(render(ci_name))
    kinds = {label.split("/")[0] for label, _, _ in workloads}
    assert kinds == {"Deployment", "Job", "Pod"}, "Deployments, migration Jobs and helm test pods expected"
    for label, spec, _ in workloads:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, label
        for key in ("runAsUser", "runAsGroup", "fsGroup"):
            assert isinstance(psc[key], int) and psc[key] > 0, (label, key)
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", label
        assert spec["automountServiceAccountToken"] is False, label
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), label
        tmp_volumes = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in containers(spec):
            where = f"{label} container {c['name']}"
            res = c.get("resources", {})
            assert res.get("requests", {}).get("cpu") and res["requests"].get("memory"), where
            assert res.get("limits", {}).get("memory"), where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["runAsNonRoot"] is True and sc.get("privileged") is False, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in tmp_volumes, f"{where}: needs an emptyDir at /tmp"
            assert not re.search(r":latest$", c["image"]) and (":" in c["image"] or "@" in c["image"]), where


def test_hpa_on_means_no_replicas_in_the_deployment(render):
    hardened = render("hardened-values")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(hardened, "HorizontalPodAutoscaler")}
    assert len(hpas) == 4
    for dep in of_kind(hardened, "Deployment"):
        assert "replicas" not in dep["spec"], dep["metadata"]["name"]
        hpa = hpas[dep["metadata"]["name"]]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": dep["metadata"]["name"],
        }
        assert hpa["spec"]["minReplicas"] >= 2
    default = render("default-values")
    assert not of_kind(default, "HorizontalPodAutoscaler")
    assert all(dep["spec"]["replicas"] == 2 for dep in of_kind(default, "Deployment"))
    # One component only: the others keep their replicas.
    mixed = render("default-values", set_values={"components.gateway.hpa.enabled": True})
    assert "replicas" not in deployment(mixed, "gateway")["spec"]
    assert deployment(mixed, "customer")["spec"]["replicas"] == 2


def test_probes_are_native_grpc_for_services_and_http_for_the_gateway(render, ci_name):
    docs = render(ci_name)
    for component, port in GRPC_PORTS.items():
        c = deployment(docs, component)["spec"]["template"]["spec"]["containers"][0]
        # Readiness: service "" (the whole server, NOT_SERVING while it cannot do its work);
        # startup and liveness: "liveness", SERVING while the process runs (no restart for a
        # database outage).
        assert c["readinessProbe"]["grpc"] == {"port": port}, component
        for probe in ("startupProbe", "livenessProbe"):
            assert c[probe]["grpc"] == {"port": port, "service": "liveness"}, (component, probe)
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": port, "metrics": METRICS_PORT}
        assert env_of(c)["ZT_GRPC_PORT"] == str(port)
        assert c["args"] == [component.replace("-", "_")]
    gw = deployment(docs, "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gw["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # (not /readyz: one backend NOT_SERVING must not take every gateway pod out of rotation)
    assert gw["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in gw["ports"]} == {"http": 8080, "metrics": METRICS_PORT}
    assert env_of(gw)["ZT_HTTP_PORT"] == "8080" and gw["args"] == ["gateway"]


def test_rollout_spread_and_graceful_shutdown(render, ci_name):
    docs = render(ci_name)
    config = by_name(docs, "ConfigMap", f"{FULLNAME}-config")["data"]
    grace = float(config["ZT_GRPC_SHUTDOWN_GRACE_S"])
    for dep in of_kind(docs, "Deployment"):
        name = dep["metadata"]["name"]
        assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        sleep = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        assert spec["terminationGracePeriodSeconds"] > float(sleep[1]) + grace, name
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for tsc in spec["topologySpreadConstraints"]:
            assert tsc["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], name
        assert spec["enableServiceLinks"] is False


def test_grace_period_too_short_is_refused(render_error):
    err = render_error("default-values", set_values={"shutdown.terminationGracePeriodSeconds": 12})
    assert "terminationGracePeriodSeconds" in err


def test_pdbs_select_their_component(render, ci_name):
    docs = render(ci_name)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert len(pdbs) == 4
    for pdb in pdbs:
        dep = by_name(docs, "Deployment", pdb["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_services_target_the_pods_and_headless_services_back_dns_targets(render):
    # Headless Services (dns:/// round robin over every ready pod) are the default; off, the
    # clients target the ClusterIP Services.
    for ci, headless_on in (("default-values", False), ("hardened-values", True), ("default-values", True)):
        docs = render(ci, set_values={"headlessServices.enabled": headless_on})
        config = by_name(docs, "ConfigMap", f"{FULLNAME}-config")["data"]
        for component, port in GRPC_PORTS.items():
            svc = by_name(docs, "Service", f"{FULLNAME}-{component}")
            dep = deployment(docs, component)
            assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
            assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == port
            var = "ZT_DATAHUB_TARGET" if component == "data-hub" else f"ZT_{component.upper()}_TARGET"
            fqdn_suffix = f".{chart.DEFAULT_NAMESPACE}.svc.cluster.local:{port}"
            if headless_on:
                headless = by_name(docs, "Service", f"{FULLNAME}-{component}-headless")
                assert headless["spec"]["clusterIP"] == "None"
                assert headless["spec"]["selector"] == svc["spec"]["selector"]
                assert config[var] == f"dns:///{FULLNAME}-{component}-headless{fqdn_suffix}"
            else:
                assert config[var] == f"{FULLNAME}-{component}{fqdn_suffix}"
                assert not [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-headless")]


def test_disabled_component_renders_nothing(render):
    docs = render("default-values", set_values={"components.data_hub.enabled": False})
    assert not [d for d in docs if "data-hub" in d["metadata"]["name"]]
    assert "ZT_DATAHUB_TARGET" not in by_name(docs, "ConfigMap", f"{FULLNAME}-config")["data"]


def test_migration_jobs_are_pre_install_hooks_per_database(render, ci_name):
    docs = render(ci_name)
    jobs = of_kind(docs, "Job")
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        f"{FULLNAME}-migrate-customer",
        f"{FULLNAME}-migrate-data-hub",
        f"{FULLNAME}-migrate-gateway",  # the shared Idempotency-Key table (ADR 0022)
        f"{FULLNAME}-migrate-product",
    ]
    secret = "zhongtai-credentials" if ci_name != "default-values" else f"{FULLNAME}-dev"
    for job in jobs:
        ann = job["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        c = spec["containers"][0]
        service = job["metadata"]["name"].removeprefix(f"{FULLNAME}-migrate-").replace("-", "_")
        assert c["args"] == ["migrate", service]
        db = env_of(c)["ZT_DATABASE_URL"]["secretKeyRef"]
        assert db["name"] == secret and db["key"] == f"{service.replace('_', '-')}-database-url"
        # The Job cannot use the release's ConfigMap (it does not exist yet at pre-install).
        assert "envFrom" not in c and env_of(c)["ZT_ENVIRONMENT"]
    # Migrations run in the image's entrypoint: no command override.
    assert all("command" not in j["spec"]["template"]["spec"]["containers"][0] for j in jobs)


def test_kube_version_floor(helm):
    chart.render([chart.CI_VALUES_DIR / "default-values.yaml"], kube_version="1.27.0", helm=helm)
    with pytest.raises(chart.ChartCheckError, match="kubeVersion"):
        chart.render([chart.CI_VALUES_DIR / "default-values.yaml"], kube_version="1.26.9", helm=helm)


def test_rendered_objects_are_strictly_valid(render, ci_name):
    validated, _custom, errors = chart.validate_docs(render(ci_name), "1.29.0")
    assert not errors
    assert validated > 20


def test_strict_validation_catches_unknown_fields_and_float_topic_config(render):
    dep = yaml.safe_load(yaml.safe_dump(deployment(render("default-values"), "customer")))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    _, _, errors = chart.validate_docs([dep], "1.30.0")
    assert errors and "readinessprobe" in errors[0]
    topic = {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaTopic",
        "metadata": {"name": "t", "labels": {}},
        "spec": {"partitions": 3, "replicas": 3, "topicName": "x", "config": {"retention.ms": 6.048e08}},
    }
    problems = " ".join(chart.check_kafka_topic(topic))
    for expected in ("kafka.strimzi.io/v1", "strimzi.io/cluster", "resource-policy", "precision"):
        assert expected in problems


def test_the_data_hub_is_a_dynamic_group_member_unless_static_membership_is_asked_for(render, ci_name):
    """Static membership (the pod name as group.instance.id) is off by default (ADR 0046: the pinned
    client's static groups stalled after a network cut); on request, each pod is its own member."""
    docs = render(ci_name)
    hub = deployment(docs, "data-hub")["spec"]["template"]["spec"]["containers"][0]
    by_name_env = {e["name"]: e for e in hub["env"]}
    assert "ZT_DATAHUB_GROUP_INSTANCE_ID" not in by_name_env
    assert by_name_env["ZT_DATAHUB_SESSION_TIMEOUT_MS"]["value"] == "10000"
    on = render(ci_name, set_values={"config.data_hub.staticMembership": True})
    hub = deployment(on, "data-hub")["spec"]["template"]["spec"]["containers"][0]
    by_name_env = {e["name"]: e for e in hub["env"]}
    assert by_name_env["ZT_DATAHUB_GROUP_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_gateway_passes_the_consoles_oidc_provider_and_no_secret(render, ci_name):
    """The console signs in at the bank's OIDC provider as a public client (code + PKCE)."""
    provider = {
        "config.gateway.consoleOidc.authorizationEndpoint": "https://idp.bank.example/authorize",
        "config.gateway.consoleOidc.tokenEndpoint": "https://idp.bank.example/token",
        "config.gateway.consoleOidc.clientId": "zhongtai-console",
    }
    gateway = deployment(render(ci_name, set_values=provider), "gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["ZT_CONSOLE_OIDC_AUTHORIZATION_ENDPOINT"] == "https://idp.bank.example/authorize"
    assert env["ZT_CONSOLE_OIDC_TOKEN_ENDPOINT"] == "https://idp.bank.example/token"
    assert env["ZT_CONSOLE_OIDC_CLIENT_ID"] == "zhongtai-console"
    assert env["ZT_CONSOLE_OIDC_SCOPE"].startswith("openid ")
    assert not any("OIDC" in name and "SECRET" in name for name in env)
    default = deployment(render(ci_name), "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in default["env"]}["ZT_CONSOLE_OIDC_AUTHORIZATION_ENDPOINT"] == ""
