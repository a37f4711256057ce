"""No credential in any rendered object, except the dev-only Secret when it is asked for."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from services.cli import DEV_SECRET
from services.customer.config import DEV_BLIND_INDEX_KEY, DEV_PII_KEY

from .conftest import CI_FILES, Docs, containers, env_of, of_kind, pod_specs, strings

DEV_VALUES = yaml.safe_load(CI_FILES["default-values"].read_text())["devSecrets"]
# Every inline credential of ci/default-values.yaml, and the code's public dev keys (the chart
# must never fall back on them).
KNOWN_SECRETS = {
    value for key, value in DEV_VALUES.items() if key != "enabled" and isinstance(value, str) and len(value) >= 8
} | {DEV_SECRET, DEV_PII_KEY, DEV_BLIND_INDEX_KEY}
# scheme://user:password@host: a password in a URL (database URLs, Kafka SASL URLs ...).
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@/\s]+@", re.IGNORECASE)
# Environment variable names that would carry a credential inline.
CREDENTIAL_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|_KEY$|_KEYS$|TOKEN$|DATABASE_URL)")
EXISTING = "bank-zhongtai-credentials"

# Renders that take credentials from a Secret the operator manages. The last one leaves the
# dev values in place with the flag off: they must not leak anywhere.
EXISTING_SECRET_RENDERS: list[tuple[str, dict[str, Any]]] = [
    ("hardened-values", {}),
    ("strimzi-values", {}),
    ("default-values", {"devSecrets.enabled": False, "secrets.existingSecret": EXISTING}),
]


def _leaks(doc: dict[str, Any]) -> list[str]:
    found = []
    for text in strings(doc):
        found += [f"dev credential {s[:6]}..." for s in KNOWN_SECRETS if s in text]
        found += [f"password in URL {m.group(0)[:12]}..." for m in URL_WITH_PASSWORD.finditer(text)]
    return found


def _secret_refs(docs: Docs) -> list[dict[str, Any]]:
    refs = []
    for _label, spec, _ in pod_specs(docs):
        for c in containers(spec):
            refs += [v["secretKeyRef"] for v in env_of(c).values() if isinstance(v, dict) and "secretKeyRef" in v]
            assert not [s for s in c.get("envFrom", []) if "secretRef" in s], "whole-Secret envFrom hides what is read"
    return refs


def test_the_scan_knows_the_dev_credentials():
    assert len(KNOWN_SECRETS) >= 8
    assert URL_WITH_PASSWORD.search(DEV_VALUES["customerDatabaseUrl"])


@pytest.mark.parametrize(("ci", "set_values"), EXISTING_SECRET_RENDERS)
def test_existing_secret_is_used_and_nothing_secret_is_rendered(render, ci, set_values):
    docs = render(ci, set_values=set_values)
    expected = (
        set_values.get("secrets.existingSecret")
        or yaml.safe_load(CI_FILES[ci].read_text())["secrets"]["existingSecret"]
    )
    assert not of_kind(docs, "Secret")
    refs = _secret_refs(docs)
    assert refs and {r["name"] for r in refs} == {expected}
    for doc in docs:
        assert not _leaks(doc), f"{doc['kind']}/{doc['metadata']['name']}: {_leaks(doc)}"
        assert "checksum/dev-secrets" not in str(doc)


def test_dev_secrets_appear_only_in_the_dev_secret(render):
    docs = render("default-values")
    (secret,) = of_kind(docs, "Secret")
    assert _leaks(secret)  # the scan does see them where they are
    assert {r["name"] for r in _secret_refs(docs)} == {secret["metadata"]["name"]}
    for doc in docs:
        if doc is not secret:
            assert not _leaks(doc), f"{doc['kind']}/{doc['metadata']['name']}: {_leaks(doc)}"


def test_no_inline_value_for_a_credential_variable(render, ci_name):
    for label, spec, _ in pod_specs(render(ci_name)):
        for c in containers(spec):
            for name, value in env_of(c).items():
                if CREDENTIAL_NAME.search(name):
                    assert isinstance(value, dict) and "secretKeyRef" in value, f"{label}: {name} is inline"
