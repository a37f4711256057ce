"""`make chart`: offline checks of the Helm chart (infra/k8s/zhongtai) and the Dockerfile.

1. Build a real `helm` once from the Go module proxy and cache it (~/.cache/zhongtai/bin).
2. `helm lint --strict` with every ci/*-values.yaml.
3. `helm template` with every ci values file, once per Kubernetes version below (with
   --kube-version, so the chart's kubeVersion constraint is exercised too).
4. Validate every rendered object strictly (unknown fields are errors) against the
   Kubernetes JSON schemas shipped in `kubernetes-validate`, for each version. Custom
   resources (Strimzi KafkaTopic) have no schema there: their shape is checked here.
5. `helm package` the chart (into a temporary directory, or --package-dir) and check the
   archive: name and version from Chart.yaml, the files a user needs (schema, README, NOTES,
   helm test pods), nothing from ci/ or .helmignore'd paths, and that the archive lints and
   renders exactly like the chart directory.
6. Run the chart unit tests: `pytest tests/chart`.

Usable as a library too: tests/chart builds and calls helm through `helm_binary()` and
`render()`, so the tests and `make chart` use the same binary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "infra" / "k8s" / "zhongtai"
CI_VALUES_DIR = CHART_DIR / "ci"

HELM_VERSION = "v3.22.0"
# helm's Makefile stamps the Kubernetes version of its client-go (v0.37 for helm v3.22.0)
# into the binary; `go install` alone leaves the default at v1.20 and every render of a
# chart with kubeVersion >= 1.27 fails. Keep these two in step with HELM_VERSION.
HELM_K8S_MAJOR, HELM_K8S_MINOR = 1, 37
HELM_MODULE = "helm.sh/helm/v3/cmd/helm"

# Kubernetes versions the rendered manifests are validated against: the chart's floor
# (kubeVersion >=1.27), the versions most bank platforms run, and the newest schema set.
K8S_VERSIONS = ("1.27.0", "1.29.0", "1.30.0", "1.31.0", "1.37.0")

DEFAULT_RELEASE = "zt"
DEFAULT_NAMESPACE = "bank"

# Custom resources rendered by the chart, checked by shape instead of by schema.
CUSTOM_API_GROUPS = ("kafka.strimzi.io/",)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KAFKA_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_FLOAT_NOTATION = re.compile(r"[-+]?\d+(\.\d+)?e[-+]?\d+")


class ChartCheckError(Exception):
    """A check failed; the message says what and how to fix it."""


# ----------------------------------------------------------------------------- helm ----
def cache_bin_dir() -> Path:
    override = os.environ.get("ZT_TOOLS_BIN")
    if override:
        return Path(override)
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache_home / "zhongtai" / "bin"


def _go_binary() -> str:
    found = shutil.which("go")
    if found:
        return found
    for candidate in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise ChartCheckError(
        "`go` is needed once to build helm " + HELM_VERSION + " and is not on PATH.\n"
        "Fix: install Go >= 1.24 (https://go.dev/dl/, or `apt-get install -y golang-go`) and put "
        "its bin/ on PATH, then re-run `make chart`. Alternatively place a helm "
        + HELM_VERSION
        + " binary at "
        + str(cache_bin_dir() / "helm")
        + "."
    )


def _helm_version(helm: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(helm), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def go_install(name: str, module: str, version: str, ldflags: str, *, log=print) -> Path:
    """Build ``module@version`` with `go install` into the tool cache as ``name`` (first run only)
    and return its path; the caller checks the version the binary reports."""
    target = cache_bin_dir() / name
    go = _go_binary()
    bin_dir = cache_bin_dir()
    bin_dir.mkdir(parents=True, exist_ok=True)
    log(f"building {name} {version} with {go} (first run only, a few minutes) ...")
    started = time.monotonic()
    # Build into a private directory and rename: concurrent runs never see half a binary.
    with tempfile.TemporaryDirectory(dir=bin_dir) as tmp:
        env = dict(os.environ, GOBIN=tmp, CGO_ENABLED="0")
        env["PATH"] = os.pathsep.join([str(Path(go).parent), env.get("PATH", "")])
        proc = subprocess.run(
            [go, "install", "-trimpath", "-ldflags", ldflags, f"{module}@{version}"],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ChartCheckError(
                f"`go install {module}@{version}` failed:\n{proc.stderr[-4000:]}\n"
                "Fix: check access to the Go module proxy (GOPROXY, default https://proxy.golang.org) "
                f"or place a {name} {version} binary at {target}."
            )
        os.replace(Path(tmp) / module.rsplit("/", 1)[-1], target)
    log(f"{name} {version} built in {time.monotonic() - started:.0f}s: {target}")
    return target


def helm_binary(*, log=print) -> Path:
    """Return the cached helm, building it with `go install` the first time."""
    helm = cache_bin_dir() / "helm"
    if helm.exists() and _helm_version(helm) == HELM_VERSION:
        return helm
    ldflags = " ".join(
        [
            "-s -w",
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={HELM_K8S_MAJOR}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={HELM_K8S_MINOR}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={HELM_K8S_MAJOR}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={HELM_K8S_MINOR}",
        ]
    )
    go_install("helm", HELM_MODULE, HELM_VERSION, ldflags, log=log)
    version = _helm_version(helm)
    if version != HELM_VERSION:
        raise ChartCheckError(f"built helm reports version {version!r}, expected {HELM_VERSION}")
    return helm


def run_helm(args: Sequence[str], *, helm: Path | None = None) -> subprocess.CompletedProcess[str]:
    helm = helm or helm_binary()
    env = dict(os.environ)
    # Keep helm away from the user's repositories, plugins and kubeconfig.
    scratch = Path(tempfile.gettempdir()) / "zhongtai-helm"
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env[var] = str(scratch / sub)
    env["KUBECONFIG"] = os.devnull
    return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120)


def template_args(
    values_files: Iterable[Path | str] = (),
    *,
    set_values: dict[str, Any] | None = None,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    kube_version: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    args = ["template", release, str(CHART_DIR), "--namespace", namespace]
    for f in values_files:
        args += ["--values", str(f)]
    for key, value in (set_values or {}).items():
        if isinstance(value, str):
            args += ["--set-string", f"{key}={value}"]
        else:
            # JSON keeps floats numbers (`--set` would make 0.5 a string) and allows lists/maps.
            args += ["--set-json", f"{key}={json.dumps(value)}"]
    if kube_version:
        args += ["--kube-version", kube_version]
    return [*args, *extra]


def render(
    values_files: Iterable[Path | str] = (),
    *,
    set_values: dict[str, Any] | None = None,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    kube_version: str | None = None,
    extra: Sequence[str] = (),
    helm: Path | None = None,
) -> list[dict[str, Any]]:
    """`helm template` the chart and return the parsed objects (hooks and tests included)."""
    proc = run_helm(
        template_args(
            values_files,
            set_values=set_values,
            release=release,
            namespace=namespace,
            kube_version=kube_version,
            extra=extra,
        ),
        helm=helm,
    )
    if proc.returncode != 0:
        raise ChartCheckError(f"helm template failed:\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def ci_values_files() -> list[Path]:
    files = sorted(CI_VALUES_DIR.glob("*-values.yaml"))
    if not files:
        raise ChartCheckError(f"no ci values files under {CI_VALUES_DIR}")
    return files


# ------------------------------------------------------------------------ validation ----
def is_custom_resource(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(CUSTOM_API_GROUPS)


def check_kafka_topic(doc: dict[str, Any]) -> list[str]:
    """Shape of a Strimzi (kafka.strimzi.io/v1) KafkaTopic; returns the problems found."""
    problems: list[str] = []
    name = doc.get("metadata", {}).get("name", "?")
    where = f"KafkaTopic/{name}"
    if doc.get("apiVersion") != "kafka.strimzi.io/v1":
        problems.append(f"{where}: apiVersion must be kafka.strimzi.io/v1 (Strimzi 1.x serves only v1)")
    if doc.get("kind") != "KafkaTopic":
        problems.append(f"{where}: unexpected kind {doc.get('kind')!r}")
    meta = doc.get("metadata", {})
    if not _DNS_SUBDOMAIN.match(str(name)) or len(str(name)) > 63:
        problems.append(f"{where}: metadata.name is not a DNS-1123 name of <= 63 chars")
    if not meta.get("labels", {}).get("strimzi.io/cluster"):
        problems.append(f"{where}: missing label strimzi.io/cluster (the Topic Operator ignores it)")
    if meta.get("annotations", {}).get("helm.sh/resource-policy") != "keep":
        problems.append(f"{where}: needs helm.sh/resource-policy: keep (uninstall must not delete data)")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return [*problems, f"{where}: missing spec"]
    allowed = {"topicName", "partitions", "replicas", "config"}
    if unknown := set(spec) - allowed:
        problems.append(f"{where}: unknown spec fields {sorted(unknown)}")
    if not _KAFKA_TOPIC_NAME.match(str(spec.get("topicName", ""))):
        problems.append(f"{where}: spec.topicName {spec.get('topicName')!r} is not a valid Kafka topic name")
    for key in ("partitions", "replicas"):
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{where}: spec.{key} must be a positive integer, got {value!r}")
    config = spec.get("config", {})
    if not isinstance(config, dict):
        problems.append(f"{where}: spec.config must be a map")
    else:
        for key, value in config.items():
            if isinstance(value, float) or (isinstance(value, str) and _FLOAT_NOTATION.fullmatch(value)):
                problems.append(f"{where}: config {key}={value!r} lost precision (quote big numbers)")
            elif not isinstance(value, str | int | bool):
                problems.append(f"{where}: config {key} has unsupported type {type(value).__name__}")
    return problems


def validate_docs(docs: Iterable[dict[str, Any]], k8s_version: str) -> tuple[int, int, list[str]]:
    """Strictly validate built-in objects; shape-check custom resources.

    Returns (validated against schemas, custom resources checked, errors).
    """
    import kubernetes_validate  # local: only `make chart` and the tests need it

    validated = custom = 0
    errors: list[str] = []
    for doc in docs:
        label = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if is_custom_resource(doc):
            custom += 1
            if doc.get("kind") == "KafkaTopic":
                errors += check_kafka_topic(doc)
            else:
                errors.append(f"{label}: custom resource without a shape check")
            continue
        try:
            used = kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{label} (k8s {k8s_version}) at {path or '<root>'}: {exc.message}")
            continue
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{label}: {exc.message}")
            continue
        want = ".".join(k8s_version.split(".")[:2])
        if used != want:
            errors.append(f"{label}: validated against k8s {used} schemas instead of {want}")
            continue
        validated += 1
    return validated, custom, errors


# ------------------------------------------------------------------------- packaging ----
# Files every packaged chart must carry (relative to the chart directory).
PACKAGE_REQUIRED = (
    "Chart.yaml",
    "values.yaml",
    "values.schema.json",
    "README.md",
    "templates/NOTES.txt",
    "templates/_helpers.tpl",
    "templates/tests/test-grpc-health.yaml",
    "templates/tests/test-gateway-http.yaml",
)


def chart_metadata() -> dict[str, Any]:
    meta = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    if not isinstance(meta, dict):
        raise ChartCheckError(f"{CHART_DIR / 'Chart.yaml'} is not a mapping")
    return meta


def package_chart(dest: Path, *, helm: Path | None = None) -> Path:
    """`helm package` into dest; returns the archive."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = run_helm(["package", str(CHART_DIR), "--destination", str(dest)], helm=helm)
    if proc.returncode != 0:
        raise ChartCheckError(f"helm package failed:\n{proc.stderr.strip()}")
    meta = chart_metadata()
    tgz = dest / f"{meta['name']}-{meta['version']}.tgz"
    if not tgz.is_file():
        raise ChartCheckError(f"helm package did not write {tgz.name}: {sorted(p.name for p in dest.iterdir())}")
    return tgz


def check_package(tgz: Path, *, helm: Path | None = None) -> list[str]:
    """Problems of a packaged chart (empty when fine)."""
    meta = chart_metadata()
    root = str(meta["name"])
    problems: list[str] = []
    with tarfile.open(tgz) as tar:
        members = tar.getmembers()
        names = {m.name for m in members}
        packaged = tar.extractfile(f"{root}/Chart.yaml")
        packaged_meta = yaml.safe_load(packaged.read()) if packaged else {}
    for m in members:
        if not m.name.startswith(f"{root}/") or ".." in Path(m.name).parts:
            problems.append(f"{tgz.name}: member outside {root}/: {m.name}")
        if not (m.isfile() or m.isdir()):
            problems.append(f"{tgz.name}: {m.name} is not a regular file")
    problems += [f"{tgz.name}: missing {root}/{f}" for f in PACKAGE_REQUIRED if f"{root}/{f}" not in names]
    problems += [f"{tgz.name}: ships {n} (ci/ is for `make chart` only)" for n in names if n.startswith(f"{root}/ci/")]
    for key in ("name", "version", "appVersion", "kubeVersion"):
        if packaged_meta.get(key) != meta.get(key):
            problems.append(f"{tgz.name}: Chart.yaml {key} {packaged_meta.get(key)!r} != {meta.get(key)!r}")
    values = CI_VALUES_DIR / "hardened-values.yaml"
    lint = run_helm(["lint", "--strict", str(tgz), "--values", str(values)], helm=helm)
    if lint.returncode != 0:
        problems.append(f"helm lint --strict {tgz.name}:\n{lint.stdout}{lint.stderr}")
    for values_file in ci_values_files():
        from_dir = render([values_file], helm=helm)
        args = template_args([values_file])
        args[2] = str(tgz)
        proc = run_helm(args, helm=helm)
        if proc.returncode != 0:
            problems.append(f"helm template {tgz.name} -f {values_file.name}: {proc.stderr.strip()}")
        elif [d for d in yaml.safe_load_all(proc.stdout) if d] != from_dir:
            problems.append(f"{tgz.name} renders differently from {CHART_DIR} with {values_file.name}")
    return problems


# ----------------------------------------------------------------------------- main ----
@dataclass
class Summary:
    lint_runs: int = 0
    renders: int = 0
    validated: int = 0
    custom: int = 0
    package: str = ""


def run_checks(*, versions: Sequence[str] = K8S_VERSIONS, package_dir: Path | None = None, log=print) -> Summary:
    helm = helm_binary(log=log)
    summary = Summary()
    failures: list[str] = []
    for values in ci_values_files():
        rel = values.relative_to(REPO_ROOT)
        proc = run_helm(["lint", "--strict", str(CHART_DIR), "--values", str(values)], helm=helm)
        summary.lint_runs += 1
        if proc.returncode != 0:
            failures.append(f"helm lint --strict -f {rel}:\n{proc.stdout}{proc.stderr}")
            continue
        for version in versions:
            try:
                docs = render([values], kube_version=version, helm=helm)
            except ChartCheckError as exc:
                failures.append(f"{rel} @ k8s {version}: {exc}")
                continue
            summary.renders += 1
            validated, custom, errors = validate_docs(docs, version)
            summary.validated += validated
            summary.custom += custom
            failures += [f"{rel}: {e}" for e in errors]
            log(f"  {rel} @ k8s {version}: {len(docs)} objects, {validated} schema-valid, {custom} custom")
    with tempfile.TemporaryDirectory(prefix="zhongtai-package-") as tmp:
        try:
            tgz = package_chart(package_dir or Path(tmp), helm=helm)
        except ChartCheckError as exc:
            failures.append(str(exc))
        else:
            problems = check_package(tgz, helm=helm)
            failures += problems
            size = tgz.stat().st_size
            summary.package = (
                f"{tgz.name} ({size / 1024:.0f} KiB{', kept in ' + str(package_dir) if package_dir else ''})"
            )
            log(f"  helm package: {summary.package}: {'OK' if not problems else 'FAILED'}")
    if failures:
        raise ChartCheckError("chart checks failed:\n- " + "\n- ".join(failures))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.chart", description=__doc__.splitlines()[0])
    parser.add_argument("--no-tests", action="store_true", help="skip `pytest tests/chart`")
    parser.add_argument("--helm-only", action="store_true", help="only build/locate helm and print its path")
    parser.add_argument(
        "--package-dir", type=Path, help="keep the `helm package` archive here (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.helm_only:
            print(helm_binary())
            return 0
        summary = run_checks(package_dir=args.package_dir)
    except ChartCheckError as exc:
        print(f"\nFAIL: {exc}", file=sys.stderr)
        return 1
    print(
        f"helm lint --strict: {summary.lint_runs} values files OK; {summary.renders} renders; "
        f"{summary.validated} objects valid (strict) against k8s {', '.join(K8S_VERSIONS)}; "
        f"{summary.custom} custom resources shape-checked; packaged {summary.package} "
        f"({time.monotonic() - started:.1f}s)"
    )
    if args.no_tests:
        return 0
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/chart"], cwd=REPO_ROOT)
    print(f"make chart: {'OK' if rc == 0 else 'FAILED'} in {time.monotonic() - started:.1f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
