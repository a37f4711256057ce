"""Fixtures of the chart tests: the real helm (built once by devtools/chart.py) and renders.

Nothing here skips: without a cached helm the session builds it (needs Go), exactly as
`make chart` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import chart

Docs = list[dict[str, Any]]
CI_FILES = {path.stem: path for path in sorted(chart.CI_VALUES_DIR.glob("*-values.yaml"))}
RELEASE = chart.DEFAULT_RELEASE
NAMESPACE = chart.DEFAULT_NAMESPACE
FULLNAME = f"{RELEASE}-zhongtai"


@pytest.fixture(scope="session")
def helm() -> Path:
    return chart.helm_binary()


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Docs]:
    """render("hardened-values", {"key": value}) -> parsed objects (cached per arguments)."""
    cache: dict[str, Docs] = {}

    def _render(*ci_names: str, set_values: dict[str, Any] | None = None, **kwargs: Any) -> Docs:
        key = json.dumps([ci_names, set_values, kwargs], sort_keys=True, default=str)
        if key not in cache:
            files = [CI_FILES[name] for name in ci_names]
            cache[key] = chart.render(files, set_values=set_values, helm=helm, **kwargs)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def render_error(helm: Path) -> Callable[..., str]:
    """Render that must fail; returns helm's stderr."""

    def _render_error(*ci_names: str, set_values: dict[str, Any] | None = None, **kwargs: Any) -> str:
        files = [CI_FILES[name] for name in ci_names]
        proc = chart.run_helm(chart.template_args(files, set_values=set_values, **kwargs), helm=helm)
        assert proc.returncode != 0, f"render unexpectedly succeeded with {ci_names} {set_values}"
        return proc.stderr

    return _render_error


@pytest.fixture(params=sorted(CI_FILES), scope="session")
def ci_name(request: pytest.FixtureRequest) -> Iterator[str]:
    return request.param


# ----------------------------------------------------------------- helpers for tests ----
def of_kind(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}")


def pod_specs(docs: Docs) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(label, pod spec, pod labels) of every workload: Deployments, Jobs and bare Pods."""
    out = []
    for doc in docs:
        label = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            out.append((label, template["spec"], template["metadata"].get("labels", {})))
        elif doc["kind"] == "Pod":
            out.append((label, doc["spec"], doc["metadata"].get("labels", {})))
    return out


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def deployment(docs: Docs, component: str) -> dict[str, Any]:
    return by_name(docs, "Deployment", f"{FULLNAME}-{component}")


def strings(node: Any) -> Iterator[str]:
    """Every string in a rendered object, keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node
