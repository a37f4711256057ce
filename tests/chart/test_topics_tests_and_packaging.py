"""Strimzi topics, `helm test` pods (their scripts run for real here), packaging, schema."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devtools import chart

from .conftest import FULLNAME, NAMESPACE, deployment, of_kind

TOPICS = [
    "bank.customer.v1", "bank.product.v1", "bank.subscription.v1", "bank.customer-view.v1", "data-hub.dlq",
    "product-eligibility.dlq",
]  # fmt: skip


# --------------------------------------------------------------------------- Strimzi ----
def test_topics_only_with_the_flag(render):
    assert not of_kind(render("default-values"), "KafkaTopic")
    assert not of_kind(render("hardened-values"), "KafkaTopic")
    assert of_kind(render("default-values", set_values={"strimzi.topics.enabled": True}), "KafkaTopic")


def test_topics_shape_and_keep_policy(render):
    topics = {t["spec"]["topicName"]: t for t in of_kind(render("strimzi-values"), "KafkaTopic")}
    assert sorted(topics) == sorted(TOPICS)
    for name, topic in topics.items():
        assert chart.check_kafka_topic(topic) == []
        assert topic["apiVersion"] == "kafka.strimzi.io/v1"
        assert topic["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "bank-kafka"
        assert topic["metadata"]["name"].startswith(FULLNAME + "-"), name
        assert all(isinstance(v, str) for v in topic["spec"]["config"].values()), name
        assert topic["spec"]["replicas"] == 3
    assert topics["bank.customer-view.v1"]["spec"]["config"]["cleanup.policy"] == "compact"
    assert "cleanup.policy" not in topics["bank.customer.v1"]["spec"]["config"]
    assert topics["bank.customer.v1"]["spec"]["config"]["retention.ms"] == "604800000"
    assert topics["data-hub.dlq"]["spec"]["config"]["retention.ms"] == "2419200000"
    assert topics["bank.product.v1"]["spec"]["partitions"] == 3
    assert topics["bank.customer.v1"]["spec"]["partitions"] == 6  # config.kafka.topicPartitions


def test_unquoted_big_topic_config_is_refused(render_error):
    err = render_error("strimzi-values", set_values={"strimzi.topics.config.retention\\.ms": 604800000})
    assert "retention.ms" in err and "want string" in err


# ------------------------------------------------------------------------- helm test ----
def _test_pods(docs) -> dict[str, dict]:
    return {
        p["metadata"]["name"].removeprefix(f"{FULLNAME}-test-"): p
        for p in of_kind(docs, "Pod")
        if p["metadata"]["annotations"].get("helm.sh/hook") == "test"
    }


def test_helm_test_pods_cover_every_service_and_the_gateway(render, ci_name):
    pods = _test_pods(render(ci_name))
    assert sorted(pods) == ["customer", "data-hub", "gateway", "product"]
    for name, pod in pods.items():
        c = pod["spec"]["containers"][0]
        assert c["command"] == ["python", "-c"]
        assert pod["spec"]["restartPolicy"] == "Never"
        target = c["args"][1]
        if name == "gateway":
            assert target == f"http://{FULLNAME}-gateway.{NAMESPACE}.svc.cluster.local:8080/readyz"
        else:
            port = {"customer": 50051, "product": 50052, "data-hub": 50053}[name]
            assert target == f"{FULLNAME}-{name}.{NAMESPACE}.svc.cluster.local:{port}"
        assert (
            c["image"] == deployment(render(ci_name), "gateway")["spec"]["template"]["spec"]["containers"][0]["image"]
        )


@pytest.fixture(scope="module")
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def _run_script(pod: dict, target: str) -> subprocess.CompletedProcess[str]:
    c = pod["spec"]["containers"][0]
    script, _, timeout = c["args"]
    return subprocess.run([sys.executable, "-c", script, target, timeout], capture_output=True, text=True, timeout=60)


def test_grpc_health_test_script_really_checks_health(render, health_server):
    target, servicer = health_server
    pod = _test_pods(render("default-values"))["customer"]
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = _run_script(pod, target)
    assert ok.returncode == 0, ok.stderr
    assert "SERVING" in ok.stdout
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    bad = _run_script(pod, target)
    assert bad.returncode == 1 and "NOT_SERVING" in bad.stdout
    down = _run_script(pod, "127.0.0.1:1")
    assert down.returncode == 1 and "UNAVAILABLE" in down.stdout


class _Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = _Ready.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_gateway_test_script_requires_readyz_200(render):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pod = _test_pods(render("default-values"))["gateway"]
        url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
        _Ready.status = 200
        assert _run_script(pod, url).returncode == 0
        _Ready.status = 503
        result = _run_script(pod, url)
        assert result.returncode == 1 and "503" in result.stdout
    finally:
        server.shutdown()


# ------------------------------------------------------------------------- packaging ----
def test_helmignore_entries_are_anchored():
    lines = [
        line.strip()
        for line in (chart.CHART_DIR / ".helmignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        # Path patterns must be anchored; bare globs like *.swp may match anywhere.
        if "/" in line.rstrip("/"):
            assert line.startswith("/"), line
        elif line.endswith("/"):
            assert line.startswith("/"), f"{line}: unanchored directory pattern"
        assert line.lstrip("/").rstrip("/") not in ("tests", "templates", "templates/tests"), line


def test_packaged_chart_keeps_test_pods_and_drops_ci(helm, tmp_path: Path):
    proc = chart.run_helm(["package", str(chart.CHART_DIR), "--destination", str(tmp_path)], helm=helm)
    assert proc.returncode == 0, proc.stderr
    (tgz,) = tmp_path.glob("zhongtai-*.tgz")
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
    assert {
        "zhongtai/templates/tests/test-grpc-health.yaml",
        "zhongtai/templates/tests/test-gateway-http.yaml",
        "zhongtai/values.schema.json",
        "zhongtai/README.md",
        "zhongtai/templates/NOTES.txt",
    } <= names
    assert not [n for n in names if n.startswith("zhongtai/ci/")]


def test_make_chart_package_check_accepts_the_chart_and_flags_bad_archives(helm, tmp_path: Path):
    tgz = chart.package_chart(tmp_path / "ok", helm=helm)
    assert chart.check_package(tgz, helm=helm) == []
    # Tamper: drop the schema and the helm test pods, ship ci/.
    bad_dir = tmp_path / "bad"
    with tarfile.open(tgz) as tar:
        tar.extractall(bad_dir, filter="data")
    (bad_dir / "zhongtai" / "values.schema.json").unlink()
    shutil.rmtree(bad_dir / "zhongtai" / "templates" / "tests")
    shutil.copytree(chart.CI_VALUES_DIR, bad_dir / "zhongtai" / "ci")
    bad = tmp_path / tgz.name
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(bad_dir / "zhongtai", arcname="zhongtai")
    problems = " ".join(chart.check_package(bad, helm=helm))
    for expected in ("missing zhongtai/values.schema.json", "test-grpc-health.yaml", "ships zhongtai/ci/"):
        assert expected in problems


def test_chart_metadata():
    meta = yaml.safe_load((chart.CHART_DIR / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["kubeVersion"] == ">=1.27.0-0"
    assert meta["type"] == "application"


def test_schema_is_strict_at_the_top_and_in_components():
    schema = json.loads((chart.CHART_DIR / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    components = schema["properties"]["components"]
    assert components["additionalProperties"] is False
    for name in ("customer", "product", "data_hub", "gateway"):
        assert components["properties"][name]["additionalProperties"] is False
    values = yaml.safe_load((chart.CHART_DIR / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_readme_documents_every_top_level_value():
    readme = (chart.CHART_DIR / "README.md").read_text()
    values = yaml.safe_load((chart.CHART_DIR / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in readme]
    assert not missing, f"README.md values table misses {missing}"


def test_notes_render(helm, tmp_path: Path):
    # `helm template` skips NOTES.txt and `install --dry-run` needs a cluster: render it
    # through `tpl` from a throwaway template in a copy of the chart.
    copy = tmp_path / "zhongtai"
    shutil.copytree(chart.CHART_DIR, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "notes.txt")  # .Files excludes templates/
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes.txt") . | quote }}}\n'
    )
    args = chart.template_args(
        [chart.CI_VALUES_DIR / "hardened-values.yaml"], extra=["--show-only", "templates/zz-notes.yaml"]
    )
    args[2] = str(copy)
    proc = chart.run_helm(args, helm=helm)
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["data"]["notes"]
    assert "helm test zt --namespace bank" in notes
    assert "ZT_CUSTOMER_TARGET=dns:///zt-zhongtai-customer-headless" in notes
    assert "rollout restart" in notes and "https://api.bank.example/" in notes
